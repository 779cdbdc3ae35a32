import CNetlinkShim
import Glibc
import Netlink

/// What `ip vrf exec` does: a cgroup whose sockets are bound to the VRF device at creation (a
/// cgroup/sock_create BPF program that sets sk_bound_dev_if), so any program run in it talks
/// inside the VRF. Cgroups are recorded in the lab's record; `down` removes them.
public enum VRFBinding {
    /// The cgroup v2 hierarchy: the system's if it has one, else one mounted under /run/cgnat
    /// (as iproute2 mounts its own when needed).
    static func cgroup2Root() throws -> String {
        if let f = fopen("/proc/self/mountinfo", "r") {
            defer { fclose(f) }
            var line = [CChar](repeating: 0, count: 4096)
            while fgets(&line, Int32(line.count), f) != nil {
                let fields = String(cString: line).split(separator: " ")
                // mount point is field 5; the fs type follows the " - " separator.
                if let dash = fields.firstIndex(of: "-"), dash + 1 < fields.count, fields[dash + 1] == "cgroup2" {
                    return String(fields[4])
                }
            }
        }
        let own = "\(LabRecord.directory)/cgroup2"
        mkdir(LabRecord.directory, 0o755)
        mkdir(own, 0o755)
        guard mount("none", own, "cgroup2", 0, nil) == 0 || errno == EBUSY else {
            throw SystemError("mount cgroup2 on \(own) (needed to run commands inside a VRF)")
        }
        return own
    }

    /// iproute2's layout (`.../vrf/NAME`), so `ip vrf identify` and `ip vrf pids` understand it.
    public static func cgroupPath(root: String, lab: String, vrf: String) -> String { "\(root)/cgnat-\(lab)/vrf/\(vrf)" }

    /// Moves the calling process into the VRF's cgroup. Call after entering the namespace that
    /// holds the VRF; `ifindex` is the VRF device's there.
    public static func bindProcess(lab: String, vrf: String, ifindex: Int32) throws {
        let root = try cgroup2Root()
        let path = cgroupPath(root: root, lab: lab, vrf: vrf)
        // Write-ahead: named in the record before it exists, so `down` removes it whatever happens.
        try LabRecord.note(lab: lab, "cgroup \(path)")
        for dir in ["\(root)/cgnat-\(lab)", "\(root)/cgnat-\(lab)/vrf", path] where mkdir(dir, 0o755) != 0 && errno != EEXIST {
            throw SystemError("create cgroup \(dir)")
        }
        let dirFD = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard dirFD >= 0 else { throw SystemError("open cgroup \(path)") }
        defer { close(dirFD) }
        let prog = try loadProgram(ifindex: ifindex)
        defer { close(prog) }
        try attach(program: prog, cgroupFD: dirFD)
        let procs = open("\(path)/cgroup.procs", O_WRONLY | O_CLOEXEC)
        guard procs >= 0 else { throw SystemError("open \(path)/cgroup.procs") }
        defer { close(procs) }
        let me = Array("\(getpid())\n".utf8)
        guard write(procs, me, me.count) == me.count else { throw SystemError("join cgroup \(path)") }
    }

    /// r1 = ctx (struct bpf_sock); ctx->bound_dev_if = ifindex; return 1 (allow).
    static func instructions(ifindex: Int32) -> [UInt8] {
        func insn(_ code: UInt8, dst: UInt8, src: UInt8 = 0, off: Int16 = 0, imm: Int32 = 0) -> [UInt8] {
            [code, (src << 4) | dst] + withUnsafeBytes(of: off.littleEndian, Array.init) + withUnsafeBytes(of: imm.littleEndian, Array.init)
        }
        return insn(0xb7, dst: 3, imm: ifindex)                // mov64 r3, ifindex
            + insn(0x63, dst: 1, src: 3, off: 0)                 // stx32 [r1 + 0 (bound_dev_if)], r3
            + insn(0xb7, dst: 0, imm: 1)                         // mov64 r0, 1
            + insn(0x95, dst: 0)                                 // exit
    }

    static let progLoad: Int32 = 5, progAttach: Int32 = 8
    static let cgroupSockType: UInt32 = 9   // BPF_PROG_TYPE_CGROUP_SOCK
    static let inetSockCreate: UInt32 = 2   // BPF_CGROUP_INET_SOCK_CREATE

    static func loadProgram(ifindex: Int32) throws -> Int32 {
        let code = instructions(ifindex: ifindex)
        var log = [CChar](repeating: 0, count: 4096)
        let license = Array("GPL\0".utf8)
        var attr = [UInt8](repeating: 0, count: 128)
        func put32(_ v: UInt32, _ at: Int) { withUnsafeBytes(of: v.littleEndian) { for i in 0..<4 { attr[at + i] = $0[i] } } }
        func put64(_ v: UInt64, _ at: Int) { withUnsafeBytes(of: v.littleEndian) { for i in 0..<8 { attr[at + i] = $0[i] } } }
        return try code.withUnsafeBufferPointer { c in
            try license.withUnsafeBufferPointer { l in
                try log.withUnsafeMutableBufferPointer { lg in
                    put32(cgroupSockType, 0)
                    put32(UInt32(code.count / 8), 4)
                    put64(UInt64(UInt(bitPattern: c.baseAddress)), 8)
                    put64(UInt64(UInt(bitPattern: l.baseAddress)), 16)
                    put32(1, 24)                                   // log_level
                    put32(UInt32(lg.count), 28)
                    put64(UInt64(UInt(bitPattern: lg.baseAddress)), 32)
                    put32(inetSockCreate, 68)                      // expected_attach_type
                    let fd = attr.withUnsafeMutableBytes { cgn_bpf(progLoad, $0.baseAddress, 128) }
                    guard fd >= 0 else {
                        let e = errno
                        let verifier = String(cString: lg.baseAddress!)
                        throw UsageError("load the VRF socket program (bpf): \(String(cString: strerror(e)))" + (verifier.isEmpty ? "" : ": \(verifier)"))
                    }
                    return Int32(fd)
                }
            }
        }
    }

    static func attach(program: Int32, cgroupFD: Int32) throws {
        var attr = [UInt8](repeating: 0, count: 128)
        func put32(_ v: UInt32, _ at: Int) { withUnsafeBytes(of: v.littleEndian) { for i in 0..<4 { attr[at + i] = $0[i] } } }
        put32(UInt32(bitPattern: cgroupFD), 0)
        put32(UInt32(bitPattern: program), 4)
        put32(inetSockCreate, 8)
        let rc = attr.withUnsafeMutableBytes { cgn_bpf(progAttach, $0.baseAddress, 128) }
        guard rc == 0 else { throw SystemError("attach the VRF socket program to its cgroup") }
    }

    /// Removes the lab's cgroups and the directories above them that cgnat made (their
    /// processes are gone by then).
    public static func removeCgroups(_ paths: [String]) {
        func parent(_ p: String) -> String { p.lastIndex(of: "/").map { String(p[..<$0]) } ?? p }
        for p in paths { rmdir(p) }
        for vrfDir in Set(paths.map(parent)) {
            rmdir(vrfDir)
            rmdir(parent(vrfDir))
        }
    }
}
