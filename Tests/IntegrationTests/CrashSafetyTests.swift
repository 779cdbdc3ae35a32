import Foundation
import Testing
import Netlink
@testable import CGNat

/// A cgnat process running in the background, with its output collected.
final class Background {
    let process = Process()
    private let out = Pipe(), err = Pipe()
    private var outData = Data(), errData = Data()
    private let lock = NSLock()

    init(_ args: [String], env: [String: String] = [:]) throws {
        process.executableURL = URL(fileURLWithPath: cgnatBinary)
        process.arguments = args
        process.environment = ProcessInfo.processInfo.environment.merging(env) { $1 }
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = out
        process.standardError = err
        out.fileHandleForReading.readabilityHandler = { [weak self] h in
            let d = h.availableData
            self?.lock.withLock { self?.outData.append(d) }
        }
        err.fileHandleForReading.readabilityHandler = { [weak self] h in
            let d = h.availableData
            self?.lock.withLock { self?.errData.append(d) }
        }
        try process.run()
    }

    var pid: Int32 { process.processIdentifier }
    var stdout: String { lock.withLock { String(decoding: outData, as: UTF8.self) } }

    /// Waits for the end (up to `seconds`, then SIGKILL) and returns status and output.
    func finish(seconds: Double = 30) -> Run {
        let deadline = Date().addingTimeInterval(seconds)
        while process.isRunning && Date() < deadline { usleep(5_000) }
        if process.isRunning { kill(pid, SIGKILL) }
        process.waitUntilExit()
        usleep(20_000)   // the last bytes through the readability handlers
        out.fileHandleForReading.readabilityHandler = nil
        err.fileHandleForReading.readabilityHandler = nil
        let rest = (out.fileHandleForReading.readDataToEndOfFile(), err.fileHandleForReading.readDataToEndOfFile())
        return lock.withLock {
            outData.append(rest.0); errData.append(rest.1)
            let code = process.terminationReason == .uncaughtSignal ? 128 + process.terminationStatus : process.terminationStatus
            return Run(status: code, stdout: String(decoding: outData, as: UTF8.self), stderr: String(decoding: errData, as: UTF8.self))
        }
    }
}

/// Everything a lab can leave behind, as a user would look for it.
func leftovers(of name: String) -> [String] {
    var found: [String] = []
    found += namespaces(withPrefix: name).map { "/run/netns/\($0)" }
    let mounts = (try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8)) ?? ""
    found += mounts.split(separator: "\n").filter { $0.contains("/run/netns/\(name)-") }.map { "mount \($0)" }
    for f in [LabRecord.path(name), LabRecord.labPath(name), LabRecord.downMarkerPath(name)] where access(f, F_OK) == 0 {
        found.append(f)
    }
    // Processes of the lab: any with the lab's name on its command line (not this test).
    for entry in directoryEntries("/proc") {
        guard let pid = Int32(entry), pid != getpid(), let cmd = ProcessStamp.commandLine(pid: pid),
              ProcessStamp.of(pid: pid) != nil else { continue }
        if cmd.split(separator: " ").contains(Substring(name)) { found.append("process \(pid): \(cmd)") }
    }
    return found
}

/// The lab is completely up: a complete record and every namespace the record names, mounted.
func completelyUp(_ name: String) -> Bool {
    guard let r = LabRecord.load(lab: name), r.complete else { return false }
    return r.namespaces.count == 7 && r.namespaces.allSatisfy { NetNamespace.identity(of: $0.name) == $0.identity }
}

@Suite(.serialized, .enabled(if: isRoot, "needs root: builds network namespaces"))
struct CrashSafetyTests {
    /// kill -9 of `up` after every step, and between recording a namespace and mounting it:
    /// `down` removes everything, and the next `up` works.
    @Test func upKilledAtEveryStepLeavesNothingAfterDown() throws {
        let name = "cgt-life-kup\(getpid() % 10000)"
        defer { _ = try? cgnat(["down", "--lab", name]) }
        let steps = Plan.netns(LabSource.default(name: name)).steps.count
        var points: [[String]] = (0..<steps).map { ["--crash-after-step", "\($0)"] }
        points += (0..<7).map { ["--crash-before-mount", "\($0)"] }
        for p in points {
            let up = try cgnat(["up", "--lab", name, "--backend", "netns"] + p)
            #expect(up.status == 9, "\(p): \(up.stderr)")
            let refused = try cgnat(["check", "--lab", name])
            #expect(refused.status != 0)
            let down = try cgnat(["down", "--lab", name])
            #expect(down.status == 0, "\(p): \(down.stderr)")
            let left = leftovers(of: name)
            #expect(left.isEmpty, "after up \(p) and down: \(left)")
            if !left.isEmpty { return }
        }
        // Random moments, also inside steps (SIGKILL from outside).
        for _ in 0..<20 {
            let up = try Background(["up", "--lab", name, "--backend", "netns", "--step-delay-ms", "1"])
            usleep(useconds_t.random(in: 0...250_000))
            kill(up.pid, SIGKILL)
            _ = up.finish()
            let down = try cgnat(["down", "--lab", name])
            #expect(down.status == 0, "\(down.stderr)")
            let left = leftovers(of: name)
            #expect(left.isEmpty, "after a killed up and down: \(left)")
            if !left.isEmpty { return }
        }
        let up = try cgnat(["up", "--lab", name, "--backend", "netns"])
        #expect(up.status == 0, "\(up.stderr)")
        #expect(completelyUp(name))
        let down = try cgnat(["down", "--lab", name])
        #expect(down.status == 0 && down.stdout.contains("removed 7 namespaces"), "\(down.stdout)")
        #expect(leftovers(of: name).isEmpty)
    }

    /// kill -9 of `down` after each of its actions (also between unmount and unlink, which
    /// leaves a plain file): lab commands refuse the half-removed lab, and a second `down`
    /// finishes the job.
    @Test func downKilledAtEveryPointIsFinishedByTheNextDown() throws {
        let name = "cgt-life-kdn\(getpid() % 10000)"
        defer { _ = try? cgnat(["down", "--lab", name]) }
        var k = 0
        var sawPlainFile = false
        while k < 100 {
            let up = try cgnat(["up", "--lab", name, "--backend", "netns"])
            #expect(up.status == 0, "\(up.stderr)")
            let down = try cgnat(["down", "--lab", name, "--crash-after-step", "\(k)"])
            if down.status == 0 { break }   // k is past the last action: it completed
            #expect(down.status == 9, "crash point \(k): \(down.stderr)")
            if let r = LabRecord.load(lab: name) {
                sawPlainFile = sawPlainFile || r.namespaces.contains { NetNamespace.occupant($0.name) == .plainFile(empty: true) }
                let exec = try cgnat(["exec", "--lab", name, "main", "--", "true"])
                #expect(exec.status != 0 && exec.stderr.contains("down"), "crash point \(k): \(exec.stderr)")
                let again = try cgnat(["up", "--lab", name])
                #expect(again.status != 0 && again.stderr.contains("cgnat down"), "crash point \(k): \(again.stderr)")
            }
            let finish = try cgnat(["down", "--lab", name])
            #expect(finish.status == 0, "crash point \(k): \(finish.stderr)")
            let left = leftovers(of: name)
            #expect(left.isEmpty, "after down killed at \(k) and down: \(left)")
            if !left.isEmpty { return }
            k += 1
        }
        #expect(k > 10, "down has an action per namespace half")
        #expect(sawPlainFile, "a crash between unmount and unlink was exercised")
        #expect(leftovers(of: name).isEmpty)
    }

    /// Two `up`s at once: exactly one builds the lab; the other waits, then says the lab is up or
    /// who holds it, never that an `up` crashed.
    @Test func twoUpsAtOnceHaveOneWinnerAndAnHonestLoser() throws {
        let name = "cgt-life-two\(getpid() % 10000)"
        defer { _ = try? cgnat(["down", "--lab", name]) }
        // A slow up (147 steps x 20 ms) against a 500 ms wait: the loser must name the holder.
        let a = try Background(["up", "--lab", name, "--backend", "netns", "--step-delay-ms", "20"], env: ["CGNAT_LOCK_WAIT_MS": "500"])
        let b = try Background(["up", "--lab", name, "--backend", "netns", "--step-delay-ms", "20"], env: ["CGNAT_LOCK_WAIT_MS": "500"])
        let ra = a.finish(), rb = b.finish()
        #expect([ra.status, rb.status].filter { $0 == 0 }.count == 1, "\(ra.stderr) | \(rb.stderr)")
        let (winner, loser) = ra.status == 0 ? (a, rb) : (b, ra)
        #expect(loser.stderr.contains("busy") && loser.stderr.contains("process \(winner.pid)") && loser.stderr.contains("cgnat up"),
                "\(loser.stderr)")
        #expect(!loser.stderr.contains("crash") && !loser.stderr.contains("half-built"))
        #expect(completelyUp(name))
        _ = try cgnat(["down", "--lab", name])
        // Fast ups with the default wait: the loser waits for the winner and finds the lab up.
        for _ in 0..<5 {
            let x = try Background(["up", "--lab", name, "--backend", "netns"])
            let y = try Background(["up", "--lab", name, "--backend", "netns"])
            let rx = x.finish(), ry = y.finish()
            #expect([rx.status, ry.status].filter { $0 == 0 }.count == 1, "\(rx.stderr) | \(ry.stderr)")
            let lost = rx.status == 0 ? ry : rx
            #expect(lost.stderr.contains("already up"), "\(lost.stderr)")
            #expect(!lost.stderr.contains("crash"))
            #expect(completelyUp(name))
            _ = try cgnat(["down", "--lab", name])
            #expect(leftovers(of: name).isEmpty)
        }
    }

    /// `down` while `up` runs: whichever gets the lab first, nothing is orphaned. Either the lab
    /// is completely up (down came first and found nothing) or nothing of it is left.
    @Test func downDuringUpOrphansNothing() throws {
        let name = "cgt-life-dup\(getpid() % 10000)"
        defer { _ = try? cgnat(["down", "--lab", name]) }
        for _ in 0..<6 {
            let up = try Background(["up", "--lab", name, "--backend", "netns", "--step-delay-ms", "2"])
            usleep(useconds_t.random(in: 0...200_000))
            let down = try cgnat(["down", "--lab", name])
            let ru = up.finish()
            #expect(ru.status == 0, "\(ru.stderr)")
            #expect(down.status == 0, "\(down.stderr)")
            if down.stdout.contains("not up") {
                #expect(completelyUp(name), "down went first: up must have built all of it")
                _ = try cgnat(["down", "--lab", name])
            }
            #expect(leftovers(of: name).isEmpty, "\(leftovers(of: name))")
        }
        // A down that cannot wait long enough fails naming the up, and leaves the lab alone.
        let up = try Background(["up", "--lab", name, "--backend", "netns", "--step-delay-ms", "10"])
        usleep(200_000)
        let impatient = try Background(["down", "--lab", name], env: ["CGNAT_LOCK_WAIT_MS": "100"]).finish()
        #expect(impatient.status != 0)
        #expect(impatient.stderr.contains("busy") && impatient.stderr.contains("process \(up.pid)"), "\(impatient.stderr)")
        #expect(!impatient.stderr.contains("cgnat down"), "no advice to run down while the holder lives")
        #expect(up.finish().status == 0)
        #expect(completelyUp(name))
        #expect(try cgnat(["down", "--lab", name]).status == 0)
        #expect(leftovers(of: name).isEmpty)
    }

    /// `down` ends a running check and a running events stream: they exit non-zero and say why.
    /// A record that is not cgnat's (here: random bytes) proves nothing: `down` refuses, keeps it,
    /// names the namespaces it sees, and touches none of them.
    @Test func downRefusesAnUnreadableRecord() throws {
        let name = "cgt-life-bad\(getpid() % 10000)"
        defer { _ = try? cgnat(["down", "--lab", name]) }
        #expect(try cgnat(["up", "--lab", name, "--backend", "netns"]).status == 0)
        let path = LabRecord.path(name)
        let good = try #require(FileManager.default.contents(atPath: path))
        let before = namespaces(withPrefix: name)
        try Data((0..<200).map { _ in UInt8.random(in: 0...255) }.filter { $0 != UInt8(ascii: "c") }).write(to: URL(fileURLWithPath: path))
        let down = try cgnat(["down", "--lab", name])
        #expect(down.status == 1 && down.stderr.contains("is unreadable") && down.stderr.contains("\(name)-main"), "\(down.stderr)")
        #expect(namespaces(withPrefix: name) == before && FileManager.default.fileExists(atPath: path))
        try good.write(to: URL(fileURLWithPath: path))
        #expect(try cgnat(["down", "--lab", name]).status == 0)
        #expect(leftovers(of: name).isEmpty)
    }

    @Test func downStopsCheckAndEvents() throws {
        let name = "cgt-life-stop\(getpid() % 10000)"
        defer { _ = try? cgnat(["down", "--lab", name]) }
        #expect(try cgnat(["up", "--lab", name, "--backend", "netns"]).status == 0)
        let check = try Background(["check", "--lab", name, "--start-delay-ms", "20000"])
        let events = try Background(["events", "--lab", name])
        func registered(_ role: String, _ pid: Int32) -> Bool {
            LabRecord.load(lab: name)?.processes.contains { $0.role == role && $0.process.pid == pid } ?? false
        }
        let deadline = Date().addingTimeInterval(10)
        while !(registered("check", check.pid) && registered("events", events.pid) && !events.stdout.isEmpty) && Date() < deadline {
            usleep(10_000)
        }
        #expect(registered("check", check.pid) && registered("events", events.pid))
        let start = Date()
        let down = try cgnat(["down", "--lab", name])
        #expect(down.status == 0, "\(down.stderr)")
        #expect(down.stdout.contains("ended ") && down.stdout.contains("check \(check.pid)") && down.stdout.contains("events \(events.pid)"), "\(down.stdout)")
        let rc = check.finish(seconds: 5), re = events.finish(seconds: 5)
        #expect(Date().timeIntervalSince(start) < 4)
        #expect(rc.status == 1 && rc.stderr.contains("lab '\(name)' went down"), "check: \(rc.status) \(rc.stderr)")
        #expect(!rc.stdout.contains(" ok "), "no result from a check whose lab went away")
        #expect(re.status == 1 && re.stderr.contains("lab '\(name)' went down"), "events: \(re.status) \(re.stderr)")
        #expect(leftovers(of: name).isEmpty)
        // A command started after down is refused.
        let late = try cgnat(["check", "--lab", name])
        #expect(late.status != 0 && late.stderr.contains("not up"))
    }

    /// VRF backend: the cgroups `exec` makes for a VRF are in the record before they exist, and
    /// `down` killed at any point is finished by the next `down`, cgroups included.
    @Test(.enabled(if: kernelHasVRF, "this kernel has no VRF driver (the VM run covers it)"))
    func vrfCgroupsGoAfterAKilledDown() throws {
        let name = "cgt-life-vcg\(getpid() % 10000)"
        defer { _ = try? cgnat(["down", "--lab", name]) }
        let root = try VRFBinding.cgroup2Root()
        let lab = LabSource.default(name: name)
        let domain = try #require(lab.router.subscribers.first?.name)
        let cgroup = VRFBinding.cgroupPath(root: root, lab: name, vrf: domain)
        var k = 0
        while k < 60 {
            let up = try cgnat(["up", "--lab", name, "--backend", "vrf"])
            #expect(up.status == 0, "\(up.stderr)")
            let exec = try cgnat(["exec", "--lab", name, "main:\(domain)", "--", "true"])
            #expect(exec.status == 0, "\(exec.stderr)")
            #expect(access(cgroup, F_OK) == 0 && LabRecord.load(lab: name)?.cgroups.contains(cgroup) == true)
            let down = try cgnat(["down", "--lab", name, "--crash-after-step", "\(k)"])
            if down.status == 0 { break }
            #expect(down.status == 9, "crash point \(k): \(down.stderr)")
            #expect(try cgnat(["down", "--lab", name]).status == 0)
            let left = leftovers(of: name) + (access(cgroup, F_OK) == 0 ? [cgroup] : [])
                + (access("\(root)/cgnat-\(name)", F_OK) == 0 ? ["\(root)/cgnat-\(name)"] : [])
            #expect(left.isEmpty, "after down killed at \(k) and down: \(left)")
            if !left.isEmpty { return }
            k += 1
        }
        #expect(k > 5)
        #expect(access(cgroup, F_OK) != 0)
    }

    /// A pid in the record whose start time differs (the pid was reused) is not signalled.
    @Test func downDoesNotKillAReusedPid() throws {
        let name = "cgt-life-pid\(getpid() % 10000)"
        defer { _ = try? cgnat(["down", "--lab", name]) }
        #expect(try cgnat(["up", "--lab", name, "--backend", "netns"]).status == 0)
        let bystander = Process()
        bystander.executableURL = URL(fileURLWithPath: "/bin/sleep")
        bystander.arguments = ["30"]
        try bystander.run()
        defer { bystander.terminate() }
        let real = ProcessStamp.of(pid: bystander.processIdentifier)!
        try LabRecord.note(lab: name, "proc \(real.pid) \(real.start + 1) check")
        #expect(try cgnat(["down", "--lab", name]).status == 0)
        #expect(real.alive, "a process that merely reuses a registered pid must live")
    }
}
