// Benchmark (not a test): `cgnat up` + `cgnat down` as a user runs them (two processes) against
// the `render` output run as a shell script with one `ip` process per command, the way the seed's
// demo built its lab; the kernel's floor (the lab's namespaces alone); and `check`'s wall time.
// Prints medians of alternating runs and the ratios.
//
// `maps`: the port-block maps loaded as nft text against the netlink batch (Maps.swift).
//
// `--scale 10,100,1000`: for each N, a lab of N subscribers (`Lab.seedScaled`: 10 domains, or one
// for N < 100) brought up and down by cgnat against the same plan as `ip -batch` files
// (`cgnat render --batch`), Mininet 2.3 (N hosts on LinuxBridge switches, no controller, run in a
// namespace of its own so the host's is never touched) and the kernel floor (N namespaces and N
// veths, nothing else).
//
// `--tput [--seconds S] [--connections N]`: TCP bulk throughput and connections per second
// through the NAT against the routed path of the seed lab, `--runs` alternating rounds
// (Throughput.swift). Runs are spaced: each waits until the kernel has freed the namespaces
// of the one before (net_namespace objects in /proc/slabinfo), which it does asynchronously.
import CGNat
import Glibc
import Netlink

func usage() -> Never {
    fputs("usage: cgnat-bench [--runs N] [--backend netns|vrf] [--cgnat PATH] [--lab NAME] [--scale N,N,... [--no-mininet]] [--tput [--seconds S] [--connections N]]\n       cgnat-bench maps [--runs N]\n", stderr)
    exit(2)
}

var runs = 11
var backend = "netns"
var cgnat: String?
var scales: [Int] = []
var mininet = true
var lab = "cgbench"
var tput = false
var tputSeconds = 1.0
var tputConnections = 2000
var args = Array(CommandLine.arguments.dropFirst())
if args.first == "maps" {
    args.removeFirst()
    var mapRuns = 5
    if args.first == "--runs", args.count == 2, let n = Int(args[1]), n > 0 { mapRuns = n } else if !args.isEmpty { usage() }
    guard geteuid() == 0 else { fputs("cgnat-bench maps: needs root (it makes scratch namespaces)\n", stderr); exit(1) }
    runMaps(runs: mapRuns)
    exit(0)
}
while !args.isEmpty {
    let a = args.removeFirst()
    switch a {
    case "--runs": guard let v = args.first, let n = Int(v), n > 0 else { usage() }; runs = n; args.removeFirst()
    case "--backend": guard let v = args.first else { usage() }; backend = v; args.removeFirst()
    case "--cgnat": guard let v = args.first else { usage() }; cgnat = v; args.removeFirst()
    case "--scale":
        guard let v = args.first else { usage() }
        scales = v.split(separator: ",").compactMap { Int($0) }
        guard !scales.isEmpty, scales.allSatisfy({ $0 >= 1 && ($0 < 100 || $0 % 10 == 0) && $0 <= 10_000 }) else { usage() }
        args.removeFirst()
    case "--no-mininet": mininet = false
    case "--tput": tput = true
    case "--seconds": guard let v = args.first, let x = Double(v), x > 0, x <= 60 else { usage() }; tputSeconds = x; args.removeFirst()
    case "--connections": guard let v = args.first, let n = Int(v), n >= 4, n <= 100_000 else { usage() }; tputConnections = n; args.removeFirst()
    case "--lab": guard let v = args.first, (try? LabName.validate(v)) != nil else { usage() }; lab = v; args.removeFirst()
    default: usage()
    }
}
guard geteuid() == 0 else { fputs("cgnat-bench: needs root (it builds labs)\n", stderr); exit(1) }
let selfPath = CommandLine.arguments[0]
let binary = cgnat ?? (selfPath.contains("/") ? String(selfPath[..<selfPath.lastIndex(of: "/")!]) + "/cgnat" : "cgnat")
guard access(binary, X_OK) == 0 else { fputs("cgnat-bench: \(binary) not found; pass --cgnat PATH\n", stderr); exit(1) }

let devnull = "/dev/null"

/// Runs a program with stdout/stderr discarded; returns (exit status, milliseconds).
func spawn(_ argv: [String], stdout: String = devnull) -> (Int32, Double) {
    var pid: pid_t = 0
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    posix_spawn_file_actions_addopen(&actions, 1, stdout, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
    posix_spawn_file_actions_addopen(&actions, 2, devnull, O_WRONLY, 0)
    let cargs = argv.map { strdup($0) } + [nil]
    defer { cargs.forEach { free($0) }; posix_spawn_file_actions_destroy(&actions) }
    let t0 = monotonicMilliseconds()
    guard posix_spawnp(&pid, argv[0], &actions, nil, cargs, environ) == 0 else { return (127, 0) }
    var status: Int32 = 0
    waitpid(pid, &status, 0)
    let ms = monotonicMilliseconds() - t0
    return ((status >> 8) & 0xff, ms)
}

func median(_ v: [Double]) -> Double {
    let s = v.sorted()
    return s.isEmpty ? .nan : (s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2)
}

func must(_ r: (Int32, Double), _ what: String) -> Double {
    guard r.0 == 0 else {
        fputs("cgnat-bench: \(what) failed (exit \(r.0)); cleaning up\n", stderr)
        _ = spawn([binary, "down", "--lab", lab])
        exit(1)
    }
    return r.1
}

func fmt(_ v: Double) -> String {
    let r = (v * 10).rounded() / 10
    return "\(Int(r)).\(Int(((r - Double(Int(r))) * 10).rounded()))"
}

guard let be = Backend(rawValue: backend) else { usage() }
if !scales.isEmpty {
    runScaled(scales, backend: be, runs: runs, mininet: mininet)
    exit(0)
}
if tput {
    runThroughput(lab: lab, backend: be, rounds: runs, seconds: tputSeconds, connections: tputConnections)
    exit(0)
}
let plan: Plan
do { plan = try Planner.plan(Lab.seed(name: lab), backend: be) } catch { fputs("cgnat-bench: \(error)\n", stderr); exit(1) }
let upScript = "/tmp/cgnat-bench-up.\(getpid()).sh", downScript = "/tmp/cgnat-bench-down.\(getpid()).sh"
func writeFile(_ path: String, _ text: String) {
    let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o755)
    let b = Array(text.utf8)
    _ = write(fd, b, b.count)
    close(fd)
}
writeFile(upScript, ShellRenderer.render(plan))
writeFile(downScript, ShellRenderer.renderDown(plan))
defer { unlink(upScript); unlink(downScript) }
let commands = plan.steps.count

var native: [Double] = [], nativeUp: [Double] = [], nativeDown: [Double] = []
var shell: [Double] = [], floor: [Double] = []
// Spaced runs: each starts once the kernel has freed the namespaces of the one before (it does
// so asynchronously; back to back, a run would measure the previous run's cleanup).
let namespaceBaseline = kernelNamespaceCount()
for i in 0..<(runs * 2) {
    _ = waitForCleanup(baseline: namespaceBaseline)
    if i % 2 == 0 {
        let u = must(spawn([binary, "up", "--lab", lab, "--backend", backend]), "cgnat up")
        let d = must(spawn([binary, "down", "--lab", lab]), "cgnat down")
        nativeUp.append(u); nativeDown.append(d); native.append(u + d)
    } else {
        let u = must(spawn(["sh", upScript]), "the rendered shell script")
        let d = must(spawn(["sh", downScript]), "the rendered teardown")
        shell.append(u + d)
    }
    // The kernel's own floor: the lab's namespaces created and deleted in-process, nothing else.
    _ = waitForCleanup(baseline: namespaceBaseline)
    let t0 = monotonicMilliseconds()
    for ns in plan.namespaces { if let fd = try? NetNamespace.create("\(ns)-floor") { close(fd) } }
    for ns in plan.namespaces { try? NetNamespace.delete("\(ns)-floor") }
    floor.append(monotonicMilliseconds() - t0)
}

_ = must(spawn([binary, "up", "--lab", lab, "--backend", backend]), "cgnat up")
var checks: [Double] = []
var checkFailed = 0
for _ in 0..<max(3, runs / 2) {
    let table = "/tmp/cgnat-bench-check.\(getpid()).txt"
    let r = spawn([binary, "check", "--lab", lab], stdout: table)
    if r.0 != 0 {
        // Say which rows failed: a benchmark must not hide a broken run.
        checkFailed += 1
        if let f = fopen(table, "r") {
            var line = [CChar](repeating: 0, count: 4096)
            while fgets(&line, Int32(line.count), f) != nil {
                let text = String(cString: line)
                if text.contains(" FAIL ") { fputs("cgnat-bench: check row failed: \(text)", stderr) }
            }
            fclose(f)
        }
    }
    unlink(table)
    checks.append(r.1)
}
_ = must(spawn([binary, "down", "--lab", lab]), "cgnat down")

let n = median(native), s = median(shell), f = median(floor)
print("cgnat-bench: seed lab, \(backend) backend, \(plan.namespaces.count) namespaces, \(commands) steps; median of \(runs) alternating spaced runs")
print("  cgnat up + cgnat down (2 processes):      \(fmt(n)) ms   (up \(fmt(median(nativeUp))) ms, down \(fmt(median(nativeDown))) ms)")
print("  rendered shell, one ip per command (\(commands + plan.namespaces.count)): \(fmt(s)) ms")
print("  kernel floor (namespaces alone):          \(fmt(f)) ms")
print("  speed-up over the shell script:           \(fmt(s / n))x   (target: 8x)")
print("  cgnat above the floor:                    \(fmt(n - f)) ms")
print("  cgnat check, whole matrix (process):      \(fmt(median(checks))) ms median, \(fmt(checks.max() ?? 0)) ms max   (target: < 150 ms, every row proven)\(checkFailed > 0 ? "  [\(checkFailed) runs had failing rows]" : "")")
