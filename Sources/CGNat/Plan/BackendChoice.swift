import CNetlinkShim
import Glibc
import Netlink

/// What the user asked for: a backend, or `auto` (VRFs where the kernel has them).
public enum BackendChoice: String, Sendable, CaseIterable {
    case auto, netns, vrf
}

/// What the running kernel offers for the VRF backend.
public struct KernelSupport: Sendable {
    public var release: String
    public var version: (major: Int, minor: Int)
    public var hasVRF: Bool
    /// Why VRF creation failed, in the kernel's words.
    public var vrfError: String?

    /// Linux 5.16 stopped conntrack/NAT from running on the VRF device's POSTROUTING pass
    /// (8e0538d8ee06, 8c9c296adfae); before it the seed's NEW-then-DESTROY symptom returns.
    public var vrfNATFixed: Bool { version.major > 5 || (version.major == 5 && version.minor >= 16) }

    public static func detect() -> KernelSupport {
        var u = utsname()
        uname(&u)
        let release = withUnsafeBytes(of: u.release) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
        let nums = release.split(whereSeparator: { !$0.isNumber }).prefix(2).compactMap { Int($0) }
        // Cheap evidence first: no loaded, built-in or loadable vrf module means no VRFs (this
        // also keeps `up` lean on such kernels). Otherwise try a VRF in a throwaway namespace:
        // only this thread enters it, and it is gone when the thread ends.
        guard vrfModuleMayExist(release: release) else {
            return KernelSupport(release: release, version: (nums.first ?? 0, nums.count > 1 ? nums[1] : 0),
                                 hasVRF: false, vrfError: "no vrf module (CONFIG_NET_VRF)")
        }
        let probe: Result<Void, Error> = Result {
            try OSThread.run {
                guard cgn_unshare(cgn_clone_newnet()) == 0 else { throw SystemError("unshare a network namespace") }
                try RouteSocket().addVRF(name: "cgnatprobe", table: 4242)
            }
        }
        var err: String?
        if case .failure(let e) = probe { err = "\(e)" }
        return KernelSupport(release: release, version: (nums.first ?? 0, nums.count > 1 ? nums[1] : 0),
                             hasVRF: err == nil, vrfError: err)
    }
}

/// Whether the vrf driver is loaded, built in, or installed as a module for this kernel.
func vrfModuleMayExist(release: String) -> Bool {
    if access("/sys/module/vrf", F_OK) == 0 { return true }
    for file in ["modules.builtin", "modules.dep"] {
        guard let f = fopen("/lib/modules/\(release)/\(file)", "r") else { continue }
        defer { fclose(f) }
        var line = [CChar](repeating: 0, count: 4096)
        while fgets(&line, Int32(line.count), f) != nil {
            let s = String(cString: line)
            if s.hasPrefix("kernel/drivers/net/vrf.ko") || s.contains("/vrf.ko") { return true }
        }
    }
    return false
}

extension BackendChoice {
    /// The backend to build with, and a sentence saying why.
    public func resolve(kernel: () -> KernelSupport = KernelSupport.detect) throws -> (Backend, String) {
        switch self {
        case .netns:
            return (.netns, "asked for")
        case .vrf:
            let k = kernel()
            guard k.hasVRF else {
                throw UsageError("the vrf backend needs a kernel with VRFs (CONFIG_NET_VRF), and this one (\(k.release)) has none: use --backend netns (one namespace per routing domain), or run under a kernel that has them (scripts/vm/run -- cgnat up --backend vrf)")
            }
            guard k.vrfNATFixed else {
                throw UsageError("the vrf backend needs Linux 5.16 or later (NAT on VRF devices was fixed there); this is \(k.release): use --backend netns")
            }
            return (.vrf, "asked for")
        case .auto:
            let k = kernel()
            if k.hasVRF && k.vrfNATFixed { return (.vrf, "auto: kernel \(k.release) has VRFs") }
            if k.hasVRF { return (.netns, "auto: kernel \(k.release) has VRFs but is older than 5.16, where NAT on VRFs breaks") }
            return (.netns, "auto: kernel \(k.release) has no VRF driver (CONFIG_NET_VRF)")
        }
    }
}
