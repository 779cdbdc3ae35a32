import CNetlinkShim
import Glibc
import Netlink

/// Puts the calling thread (about to exec a command) into a context: its network namespace, a
/// private mount namespace with that namespace's /sys (as `ip netns exec` does), and on the VRF
/// backend the VRF's socket cgroup (as `ip vrf exec` does).
public enum ContextEntry {
    public static func enter(_ context: Context, namespaceFD fd: Int32, lab: String) throws {
        if let vrf = context.vrf {
            let index = try NetNamespace.run(in: fd) { () -> Int32 in
                let sock = try RouteSocket()
                defer { sock.close() }
                return try sock.linkIndex(vrf)
            }
            // Before the private mount namespace: the cgroup must live where `down` finds it.
            try VRFBinding.bindProcess(lab: lab, vrf: vrf, ifindex: index)
        }
        try NetNamespace.enter(fd)
        guard cgn_unshare(cgn_clone_newns()) == 0 else { return }   // best effort: only sysfs views differ
        if mount("", "/", "none", UInt(MS_SLAVE | MS_REC), nil) != 0 { return }
        umount2("/sys", Int32(MNT_DETACH))
        _ = mount("sysfs", "/sys", "sysfs", 0, nil)
    }
}
