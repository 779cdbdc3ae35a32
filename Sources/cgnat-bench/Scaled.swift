import CGNat
import Glibc
import Netlink

/// The lab of N subscribers the scale bench measures: 10 domains of N/10, or one domain below 100.
func scaledLab(_ n: Int) -> Lab {
    n < 100 ? Lab.seedScaled(name: "cgb-s\(n)", domains: 1, perDomain: n)
            : Lab.seedScaled(name: "cgb-s\(n)", domains: 10, perDomain: n / 10)
}

/// Network namespaces the kernel still holds, freed or not (its slab of `struct net`).
func kernelNamespaceCount() -> Int? {
    guard let f = fopen("/proc/slabinfo", "r") else { return nil }
    defer { fclose(f) }
    var line = [CChar](repeating: 0, count: 1024)
    while fgets(&line, Int32(line.count), f) != nil {
        let text = String(cString: line)
        if text.hasPrefix("net_namespace ") {
            return text.split(separator: " ").dropFirst().first.flatMap { Int($0) }
        }
    }
    return nil
}

/// Waits until the kernel's asynchronous namespace cleanup of the last run is done: the count is
/// back at `baseline`, or has not moved for a second (others' labs come and go too), 10 s at most.
func waitForCleanup(baseline: Int?) -> Double {
    let t0 = monotonicMilliseconds()
    guard let baseline else { usleep(2_000_000); return monotonicMilliseconds() - t0 }
    var last = kernelNamespaceCount() ?? 0, stableSince = t0
    while monotonicMilliseconds() - t0 < 10_000 {
        let now = kernelNamespaceCount() ?? 0
        if now <= baseline { break }
        if now != last { last = now; stableSince = monotonicMilliseconds() }
        if monotonicMilliseconds() - stableSince > 1000 { break }
        usleep(50_000)
    }
    usleep(300_000)
    return monotonicMilliseconds() - t0
}

func writeScript(_ path: String, _ text: String) {
    let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o755)
    let b = Array(text.utf8)
    _ = b.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
    close(fd)
}

/// The kernel's floor at N: N + 1 namespaces and N veths between a hub and each of the others,
/// made with pipelined rtnetlink from one socket, then the namespaces deleted. Nothing else.
func kernelFloor(_ n: Int, prefix: String) -> (up: Double, down: Double) {
    let names = [prefix + "-hub"] + (1...n).map { "\(prefix)-\($0)" }
    let t0 = monotonicMilliseconds()
    let made: Bool = (try? OSThread.run { () -> Bool in
        for name in names { close(try NetNamespace.createOnThisThread(name)) }
        // This thread is now in the last namespace: the socket lives there, never in the host's.
        let route = try RouteSocket()
        defer { route.close() }
        let hub = try NetNamespace.open(names[0])
        defer { close(hub) }
        var batch: [NetlinkMessage] = [], fds: [Int32] = []
        for (k, name) in names.dropFirst().enumerated() {
            let fd = try NetNamespace.open(name)
            fds.append(fd)
            batch.append(RouteMessage.addVeth(name: "p\(k)", peerName: "eth0", namespaceFD: hub, peerNamespaceFD: fd,
                                              index: Int32(10 + 2 * k), peerIndex: Int32(11 + 2 * k)))
            if batch.count == 128 || k == n - 1 {
                let failures = try route.socket.requestAll(batch) { "floor veth \($0)" }
                fds.forEach { close($0) }
                fds = []
                batch = []
                if let f = failures.first { throw f.error }
            }
        }
        return true
    }) ?? false
    let t1 = monotonicMilliseconds()
    for name in names.reversed() { try? NetNamespace.delete(name) }
    let t2 = monotonicMilliseconds()
    if !made { fputs("cgnat-bench: the kernel floor run failed\n", stderr) }
    return (t1 - t0, t2 - t1)
}

/// Mininet 2.3 at N hosts: LinuxBridge switches (one per domain), no controller, timed from
/// inside Python (build+start, stop). Run in a namespace of its own, which Mininet takes for the
/// root namespace: its switches and links never touch the host's.
let mininetScript = """
import sys, time
from mininet.net import Mininet
from mininet.nodelib import LinuxBridge
from mininet.log import setLogLevel
setLogLevel('error')
# argv[1]: one subscriber per line, "DOMAIN ADDRESS/LENGTH", from the lab model.
hosts = [line.split() for line in open(sys.argv[1]) if line.strip()]
net = Mininet(controller=None, switch=LinuxBridge, build=False, autoSetMacs=True, waitConnected=False)
switches = {}
for i, (domain, ip) in enumerate(hosts):
    if domain not in switches:
        switches[domain] = net.addSwitch('s%d' % (len(switches) + 1))
    net.addLink(net.addHost('h%d' % (i + 1), ip=ip), switches[domain])
t0 = time.time()
net.build()
net.start()
t1 = time.time()
net.stop()
t2 = time.time()
print('%.1f %.1f' % ((t1 - t0) * 1000, (t2 - t1) * 1000))
"""

func haveMininet() -> Bool { spawn(["/usr/bin/python3", "-c", "import mininet.net, mininet.nodelib"]).0 == 0 }

func runMininet(_ lab: Lab, prefix: String) -> (up: Double, down: Double)? {
    let script = "/tmp/\(prefix)-mn.py", out = "/tmp/\(prefix)-mn.out", hosts = "/tmp/\(prefix)-mn.hosts"
    writeScript(script, mininetScript)
    // The same subscribers as the lab: its domains as switches, each host's first IPv4 address.
    writeScript(hosts, lab.hosts.compactMap { h -> String? in
        guard case .domain(let d) = h.attachment, let a = h.addresses.first(where: { $0.family == .v4 }) else { return nil }
        return "\(d) \(a)\n"
    }.joined())
    defer { unlink(script); unlink(out); unlink(hosts) }
    let ns = "\(prefix)-mn"
    guard spawn(["ip", "netns", "add", ns]).0 == 0 else { return nil }
    defer { _ = spawn(["ip", "netns", "del", ns]) }
    let r = spawn(["ip", "netns", "exec", ns, "/usr/bin/python3", script, hosts], stdout: out)
    guard r.0 == 0, let f = fopen(out, "r") else { fputs("cgnat-bench: mininet run failed (exit \(r.0))\n", stderr); return nil }
    defer { fclose(f) }
    var line = [CChar](repeating: 0, count: 256)
    guard fgets(&line, 256, f) != nil else { return nil }
    let v = String(cString: line).split(separator: " ").compactMap { Double($0.filter { !$0.isWhitespace }) }
    return v.count == 2 ? (v[0], v[1]) : nil
}

func runScaled(_ sizes: [Int], backend: Backend, runs: Int, mininet: Bool) {
    let withMininet = mininet && haveMininet()
    if mininet && !withMininet { fputs("cgnat-bench: Mininet is not installed (scripts/deps --bench): skipping it\n", stderr) }
    let baseline = kernelNamespaceCount()
    print("cgnat-bench --scale: \(backend) backend, medians of \(runs) spaced runs (each waits for the kernel's namespace cleanup)")
    print("  N     | cgnat up  down   total | batched shell up  down   total | mininet up  down    total | floor up  down  | vs shell vs mininet vs floor")
    for n in sizes {
        let lab = scaledLab(n)
        let plan: Plan
        do { plan = try Planner.plan(lab, backend: backend) } catch { fputs("cgnat-bench: \(error)\n", stderr); exit(1) }
        let up = "/tmp/\(lab.name)-up.sh", down = "/tmp/\(lab.name)-down.sh"
        writeScript(up, ShellRenderer.renderBatched(plan))
        writeScript(down, ShellRenderer.renderDownBatched(plan))
        defer { unlink(up); unlink(down) }
        var c: [(Double, Double)] = [], sh: [(Double, Double)] = [], mn: [(Double, Double)] = [], fl: [(Double, Double)] = []
        for _ in 0..<runs {
            _ = waitForCleanup(baseline: baseline)
            let t0 = monotonicMilliseconds()
            do { _ = try LabControl.up(lab, backend: backend, faults: .init(), showProgress: false) } catch {
                fputs("cgnat-bench: cgnat up of \(n) subscribers failed: \(error)\n", stderr)
                _ = try? Teardown.down(lab: lab.name)
                exit(1)
            }
            let t1 = monotonicMilliseconds()
            let d = must(spawn([binary, "down", "--lab", lab.name]), "cgnat down")
            c.append((t1 - t0, d))

            _ = waitForCleanup(baseline: baseline)
            let su = spawn(["sh", up])
            let sd = spawn(["sh", down])
            if su.0 != 0 || sd.0 != 0 {
                fputs("cgnat-bench: the batched shell script failed (exit \(su.0)/\(sd.0))\n", stderr)
                for ns in plan.namespaces { try? NetNamespace.delete(ns) }
                exit(1)
            }
            sh.append((su.1, sd.1))

            _ = waitForCleanup(baseline: baseline)
            fl.append(kernelFloor(n, prefix: "cgb-floor"))

            if withMininet {
                _ = waitForCleanup(baseline: baseline)
                if let m = runMininet(lab, prefix: "cgb-s\(n)") { mn.append(m) }
            }
        }
        func med(_ v: [(Double, Double)], _ k: Int) -> Double { median(v.map { k == 0 ? $0.0 : k == 1 ? $0.1 : $0.0 + $0.1 }) }
        let ct = med(c, 2), st = med(sh, 2), mt = mn.isEmpty ? Double.nan : med(mn, 2), ft = med(fl, 2)
        func col(_ v: Double, _ w: Int) -> String { let s = v.isNaN ? "-" : fmt(v); return String(repeating: " ", count: max(0, w - s.count)) + s }
        print("  \(String(repeating: " ", count: max(0, 5 - String(n).count)) + String(n)) | \(col(med(c, 0), 8)) \(col(med(c, 1), 6)) \(col(ct, 7)) | \(col(med(sh, 0), 16)) \(col(med(sh, 1), 6)) \(col(st, 7)) | "
              + "\(col(mn.isEmpty ? .nan : med(mn, 0), 10)) \(col(mn.isEmpty ? .nan : med(mn, 1), 7)) \(col(mt, 8)) | \(col(med(fl, 0), 8)) \(col(med(fl, 1), 5))  | "
              + "\(col(st / ct, 7))x \(col(mt / ct, 9))x \(col(ct / ft, 7))x")
    }
    print("  (ms; cgnat up runs in-process through LabControl.up, the same call the command makes; cgnat down is the `cgnat down` process;")
    print("   ratios: shell/cgnat and mininet/cgnat up+down, cgnat/floor. Targets at 1000: up < 3000 ms, down < 1500 ms, >= 5x shell, >= 10x mininet)")
}
