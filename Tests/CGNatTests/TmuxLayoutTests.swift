import Testing
import CGNat

/// The tmux session's windows as data (no root, no tmux): a window per context for a small lab;
/// router contexts, the uplink and a subscriber chooser for a large one.
@Suite struct TmuxLayoutTests {
    let scaled = Lab.seedScaled(domains: 10, perDomain: 100)

    @Test func smallLabKeepsAWindowPerContext() {
        let lab = Lab.seed(name: "t")
        let s = TmuxSession(lab: lab, backend: .netns, cgnat: "/x/cgnat")
        #expect(s.windows().map(\.name) == lab.contexts(backend: .netns).map { TmuxSession.windowName($0.name) } + ["events", "trace"])
        #expect(s.chosen.isEmpty)
        #expect(s.windows()[1].command == "/x/cgnat shell --lab t \(lab.hosts[1].name)")
        #expect(!s.creationCommands().contains { $0.contains("select-window") }, "no chooser binding")
    }

    @Test func scaledLabHasRouterWindowsAndAChooser() {
        let s = TmuxSession(lab: scaled, backend: .netns, cgnat: "/x/cgnat")
        let names = s.windows().map(\.name)
        let domains = (1...10).map { "main/d\($0 < 10 ? "0" : "")\($0)" }
        #expect(names == ["uplink", "main", "main/up"] + domains + ["subscribers", "events", "trace"])
        #expect(s.chosen.count == 1000 && s.chosen.first == "d01_c001" && s.chosen.last == "d10_c100")
        #expect(s.windows().first { $0.name == "subscribers" }?.command == "/x/cgnat tmux --lab scale --chooser")
        #expect(s.windows().last?.command.contains("trace --lab scale d01_c001 -- ping -c1 192.0.2.1") == true)
        let cmds = s.creationCommands()
        #expect(cmds.contains(["tmux", "-L", "cgnat-scale", "bind-key", "s", "select-window", "-t", "scale:subscribers"]))
        #expect(cmds.count == names.count + 8)
        // On the VRF backend the router's domains are the same windows.
        #expect(TmuxSession(lab: scaled, backend: .vrf, cgnat: "c").windows().map(\.name) == names)
    }

    /// Nine subscribers in all (no domain over the limit) is already too many windows.
    @Test func chooserThreshold() {
        #expect(TmuxSession(lab: Lab.seedScaled(domains: 2, perDomain: 4), backend: .netns, cgnat: "c").chosen.isEmpty)
        #expect(TmuxSession(lab: Lab.seedScaled(domains: 3, perDomain: 3), backend: .netns, cgnat: "c").chosen.count == 9)
    }

    @Test func openSelectsAnExistingWindowOrMakesOne() {
        let s = TmuxSession(lab: scaled, backend: .netns, cgnat: "/x/cgnat")
        #expect(s.openCommands("d03_c007", existing: ["uplink", "subscribers"])
                == [["tmux", "-L", "cgnat-scale", "new-window", "-t", "scale:", "-n", "d03_c007", "/x/cgnat shell --lab scale d03_c007"]])
        #expect(s.openCommands("main:d03", existing: ["main/d03"]) == [["tmux", "-L", "cgnat-scale", "select-window", "-t", "scale:main/d03"]])
    }

    @Test func chooserMenus() {
        let c = SubscriberChooser(lab: scaled, backend: .netns)
        let top = c.screen(.domains)
        #expect(top.contains("   1  d01  100 subscribers  d01_c001..d01_c100  100.64.0.1-100.64.0.100 (/10)"))
        #expect(top.contains("  10  d10  100 subscribers  d10_c001..d10_c100"))

        guard case .show(let d02) = c.step(.domains, input: "2") else { Issue.record("2 shows domain d02"); return }
        #expect(d02 == .hosts(title: "d02: 100 subscribers", names: scaled.hosts(in: "d02").map(\.name)))
        let list = c.screen(d02)
        #expect(list.contains("  50 d02_c050 100.64.0.50"))
        #expect(list.split(separator: "\n").allSatisfy { $0.count <= 100 })
        #expect(c.step(d02, input: "50") == .open("d02_c050", then: d02))
        #expect(c.step(d02, input: " d07_c003 ") == .open("d07_c003", then: d02))
        #expect(c.step(d02, input: "main:d04") == .open("main:d04", then: d02))
        #expect(c.step(d02, input: "") == .show(.domains))
        #expect(c.step(d02, input: "101") == .say("no subscriber 101: 1-100, a name or a search", d02))
        #expect(c.step(.domains, input: "11") == .say("no domain 11: 1-10, a name or a search", .domains))

        // The subscribers share addresses across domains: a search by address finds one per domain.
        guard case .show(.hosts(let title, let names)) = c.step(.domains, input: "100.64.0.42") else { Issue.record("search"); return }
        #expect(title == "10 subscribers matching '100.64.0.42'")
        #expect(names == (1...10).map { "d\($0 < 10 ? "0" : "")\($0)_c042" })
        #expect(c.step(.domains, input: "d05_c09") == .show(.hosts(title: "10 subscribers matching 'd05_c09'", names: (90...99).map { "d05_c0\($0)" })))
        #expect(c.step(.domains, input: "2001:db8:b:a0::64") == .open("d10_c100", then: .domains))
        #expect(c.step(.domains, input: "nobody") == .say("no subscriber's name or address has 'nobody'", .domains))
    }
}
