import Glibc

/// The `subscribers` window of a large lab's tmux session: a numbered menu (no fzf needed) of
/// the domains, then of a domain's subscribers; a number or a name opens that subscriber's shell
/// in a window of its own, any other text lists the subscribers whose name or address has it.
/// The state machine is data, so tests drive it without a terminal.
public struct SubscriberChooser {
    public enum State: Equatable, Sendable {
        case domains
        /// A numbered list of hosts: a domain's, or those matching a search.
        case hosts(title: String, names: [String])
    }

    public enum Step: Equatable, Sendable {
        case show(State)
        /// Open (or go to) the window of this context, then show the state again.
        case open(String, then: State)
        /// Say this, and stay.
        case say(String, State)
    }

    public let lab: Lab
    let subscribers: [Host]
    let contextNames: Set<String>

    public init(lab: Lab, backend: Backend) {
        self.lab = lab
        subscribers = lab.subscriberHosts
        contextNames = Set(lab.contexts(backend: backend).map(\.name))
    }

    /// What `input` does in `state`.
    public func step(_ state: State, input raw: String) -> Step {
        let input = String(raw.drop { $0 == " " }.reversed().drop { $0 == " " }.reversed())
        if input.isEmpty { return .show(.domains) }
        if contextNames.contains(input) { return .open(input, then: state) }
        if let k = Int(input) {
            switch state {
            case .domains:
                let domains = lab.router.subscribers
                guard k >= 1, k <= domains.count else {
                    return .say("no domain \(k): 1-\(domains.count), a name or a search", state)
                }
                let d = domains[k - 1]
                return .show(.hosts(title: "\(d.name): \(lab.hosts(in: d.name).count) subscribers", names: lab.hosts(in: d.name).map(\.name)))
            case .hosts(_, let names):
                guard k >= 1, k <= names.count else { return .say("no subscriber \(k): 1-\(names.count), a name or a search", state) }
                return .open(names[k - 1], then: state)
            }
        }
        let needle = input.lowercased()
        let found = subscribers.filter { h in
            h.name.lowercased().contains(needle) || (h.addresses + h.loopbackAddresses).contains { $0.address.description.hasPrefix(needle) }
        }
        if found.isEmpty { return .say("no subscriber's name or address has '\(input)'", state) }
        if found.count == 1 { return .open(found[0].name, then: state) }
        return .show(.hosts(title: "\(found.count) subscribers matching '\(input)'", names: found.map(\.name)))
    }

    /// The menu of `state`, for a terminal `width` columns wide.
    public func screen(_ state: State, width: Int = 100) -> String {
        var out = "lab \(lab.name): \(subscribers.count) subscribers in \(lab.router.subscribers.count) domains\n"
        out += "a subscriber's shell opens in a window of its own; ctrl-a s comes back here\n\n"
        switch state {
        case .domains:
            let domains = lab.router.subscribers
            let nameWidth = domains.map(\.name.count).max() ?? 0
            for (k, d) in domains.enumerated() {
                let hosts = lab.hosts(in: d.name)
                let summary = HostGroupSummary(hosts)
                var line = pad(String(k + 1), 4, right: true) + "  " + pad(d.name, nameWidth) + "  "
                line += pad("\(hosts.count) subscriber\(hosts.count == 1 ? "" : "s")", 17) + summary.names
                if let a = summary.addresses.first { line += "  " + a.description }
                out += line + "\n"
            }
            out += "\nnumber: a domain   name (\(subscribers.first?.name ?? "NAME")): its shell   other text: search names and addresses\n"
        case .hosts(let title, let names):
            out += "\(title)\n"
            let byName = Dictionary(subscribers.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
            let entries = names.enumerated().map { k, n -> String in
                let address = byName[n].flatMap { ($0.addresses.first { $0.family == .v4 } ?? $0.addresses.first)?.address.description } ?? ""
                return pad(String(k + 1), 4, right: true) + " " + n + " " + address
            }
            let cell = (entries.map(\.count).max() ?? 0) + 3
            let perRow = max(1, width / cell)
            var row = ""
            for (k, e) in entries.enumerated() {
                row += (k % perRow == perRow - 1 || k == entries.count - 1) ? e : pad(e, cell)
                if k % perRow == perRow - 1 || k == entries.count - 1 { out += row + "\n"; row = "" }
            }
            out += "\nnumber or name: its shell   other text: search   empty line: the domains\n"
        }
        return out
    }

    func pad(_ s: String, _ n: Int, right: Bool = false) -> String {
        let fill = String(repeating: " ", count: max(0, n - s.count))
        return right ? fill + s : s + fill
    }

    /// The menu loop, on the terminal of the chooser window; ends at end of input (ctrl-d).
    public func run(session: TmuxSession) {
        var state = State.domains
        var note = ""
        while true {
            Output.write("\u{1b}[H\u{1b}[2J" + screen(state) + (note.isEmpty ? "" : "\n\(note)\n") + "> ")
            Output.flush()
            guard let line = readLine() else { return }
            note = ""
            switch step(state, input: line) {
            case .show(let s):
                state = s
            case .say(let message, let s):
                note = message
                state = s
            case .open(let context, let s):
                state = s
                do {
                    try session.open(context)
                    note = "opened \(context) in window \(TmuxSession.windowName(context))"
                } catch {
                    note = "\(error)"
                }
            }
        }
    }
}
