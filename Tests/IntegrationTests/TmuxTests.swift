import Foundation
import Testing
import Netlink
@testable import CGNat

func tmuxInstalled() -> Bool { FileManager.default.isExecutableFile(atPath: "/usr/bin/tmux") }

@Suite(.serialized, .enabled(if: isRoot && tmuxInstalled(), "needs root and tmux"))
struct TmuxTests {
    func tmux(_ lab: String, _ args: [String]) throws -> String {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/tmux")
        p.arguments = ["-L", "cgnat-\(lab)"] + args
        let out = Pipe()
        p.standardOutput = out
        p.standardError = FileHandle.nullDevice
        try p.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return String(decoding: data, as: UTF8.self)
    }

    @Test func sessionHasAShellInEveryContext() throws {
        let name = testLabName("graph-tmux")
        defer {
            _ = try? cgnat(["down", "--lab", name])
            _ = try? tmux(name, ["kill-server"])
        }
        let r = try cgnat(["tmux", "--lab", name, "--detached"])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout.contains("is up"))   // it brought the lab up itself

        let windows = try tmux(name, ["list-windows", "-t", name, "-F", "#{window_name}"])
            .split(separator: "\n").map(String.init)
        #expect(windows == ["uplink", "blue_c1", "blue_c2", "red_c1", "main", "main/up", "main/blue", "main/red", "events", "trace"])

        let lab = Lab.seed(name: name)
        /// Polls a window until its screen contains `text` (shells start at their own pace).
        func waitFor(_ window: String, _ text: String) throws -> String {
            var screen = ""
            for _ in 0..<100 {
                screen = try tmux(name, ["capture-pane", "-p", "-t", window])
                if screen.contains(text) { break }
                usleep(100_000)
            }
            return screen
        }
        for ctx in lab.contexts(backend: .netns) {
            let window = "\(name):\(TmuxSession.windowName(ctx.name))"
            let prompt = try waitFor(window, "[\(name) \(ctx.name)]")
            #expect(prompt.contains("[\(name) \(ctx.name)]"), "prompt names the context: \(prompt.debugDescription)")
            // The shell reports its context, hostname and network namespace (by inode).
            _ = try tmux(name, ["send-keys", "-t", window, "echo \"CTX=$CGNAT_CONTEXT HOST=$(hostname) NS=$(stat -L -c %i /proc/self/ns/net)\"", "Enter"])
            let inode = NetNamespace.identity(of: ctx.namespace)!.inode
            let expected = "CTX=\(ctx.name) HOST=\(ctx.name) NS=\(inode)"
            let screen = try waitFor(window, expected)
            #expect(screen.contains(expected), "window \(ctx.name):\n\(screen)")
        }
        let keys = try tmux(name, ["list-keys"])
        #expect(keys.contains("confirm-before") && keys.contains("down --lab \(name)"), "ctrl-a d destroys the lab after asking")
        let prefix = try tmux(name, ["show-options", "-g", "prefix"])
        #expect(prefix.contains("C-a"))
        let status = try tmux(name, ["show-options", "-g", "status-right"])
        #expect(status.contains("C-a D detach"))

        // The subscriber chooser (a large lab's `subscribers` window) works on any lab: run it in a
        // window, pick domain 1, its subscriber 2, and that subscriber's shell opens in a new window.
        let domain = lab.router.subscribers[0]
        let pick = lab.hosts(in: domain.name)[1]
        _ = try tmux(name, ["kill-window", "-t", "\(name):\(pick.name)"])
        _ = try tmux(name, ["new-window", "-t", "\(name):", "-n", "chooser", "\(cgnatBinary) tmux --lab \(name) --chooser"])
        let menu = try waitFor("\(name):chooser", "number: a domain")
        #expect(menu.contains("   1  \(domain.name)  "), "the domains, numbered:\n\(menu)")
        _ = try tmux(name, ["send-keys", "-t", "\(name):chooser", "1", "Enter"])
        let list = try waitFor("\(name):chooser", "\(domain.name): ")
        #expect(list.contains("   2 \(pick.name) "), "the domain's subscribers, numbered:\n\(list)")
        _ = try tmux(name, ["send-keys", "-t", "\(name):chooser", "2", "Enter"])
        let opened = try waitFor("\(name):\(pick.name)", "[\(name) \(pick.name)]")
        #expect(opened.contains("[\(name) \(pick.name)]"), "a shell in \(pick.name): \(opened)")
        let current = try tmux(name, ["display-message", "-p", "-t", name, "#{window_name}"])
        #expect(current.hasPrefix(pick.name), "the new window is the current one: \(current)")
        // A name opens the context's existing window instead of a second one.
        _ = try tmux(name, ["send-keys", "-t", "\(name):chooser", lab.router.name, "Enter"])
        usleep(500_000)
        let all = try tmux(name, ["list-windows", "-t", name, "-F", "#{window_name}"]).split(separator: "\n")
        #expect(all.filter { $0 == lab.router.name }.count == 1 && all.filter { $0 == pick.name }.count == 1, "\(all)")

        // Running it again re-uses the session.
        let again = try cgnat(["tmux", "--lab", name, "--detached"])
        #expect(again.status == 0)
        #expect(try tmux(name, ["list-sessions", "-F", "#{session_name}"]).split(separator: "\n").count == 1)

        // down ends the shells and the tmux server.
        let down = try cgnat(["down", "--lab", name])
        #expect(down.status == 0)
        usleep(300_000)
        let sessionsAfter = try tmux(name, ["list-sessions"])
        #expect(!TmuxSession.serverExists(lab: name) || sessionsAfter.isEmpty, "after down: \(sessionsAfter) / \(down.stdout) \(down.stderr)")
        #expect(namespaces(withPrefix: name).isEmpty)
        let socket = TmuxSession.socketPath(socket: TmuxSession.socketName(lab: name))
        #expect(access(socket, F_OK) != 0, "down removes the tmux socket \(socket)")
    }
}
