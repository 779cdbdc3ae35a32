/// The topology as boxes and lines for a terminal, in the spirit of the seed's drawing: the
/// uplink host on the left, the router with its domains in the middle, the subscribers on the
/// right, each link a straight line between the two interfaces it joins. Fits `width` columns
/// by wrapping long lines inside the boxes.
public enum AsciiGraph {
    public static func render(_ t: Topology, width: Int = 100) -> String {
        let left = t.uplinkHosts.map { box(for: $0) }
        var right: [Box] = []
        let routerBox = router(t, right: &right)
        var columns = [left.isEmpty ? nil : left, [routerBox], right.isEmpty ? nil : right].compactMap { $0 }
        var next = 0
        for c in columns.indices { for b in columns[c].indices { columns[c][b].id = next; next += 1 } }
        fit(&columns, width: width, hasLeft: !left.isEmpty, hasRight: !right.isEmpty)
        let canvas = layout(left: left.isEmpty ? [] : columns[0], router: columns[left.isEmpty ? 0 : 1][0],
                            right: right.isEmpty ? [] : columns[columns.count - 1], laid: lay).lines

        let header = t.headline
        var legend = "---- a link (veth), its interface names at both ends"
        if t.subscribers.contains(where: { $0.ports.contains { $0.count > 1 } }) {
            legend += "; ==== the links of a group of subscribers"
        }
        return ([header, ""] + canvas + ["", legend]).joined(separator: "\n") + "\n"
    }

    // MARK: content

    /// One logical line of a box: shown whole when it fits, otherwise broken into `words`
    /// (continuation lines indented by two more).
    struct Row {
        var indent: Int
        var words: [String]
        /// The link this line is an end of: index of the box on the other side.
        var left: Int? = nil
        var right: Int? = nil
        var bundle = false

        init(_ indent: Int, _ words: [String], left: Int? = nil, right: Int? = nil, bundle: Bool = false) {
            self.indent = indent; self.words = words; self.left = left; self.right = right; self.bundle = bundle
        }

        static let blank = Row(0, [])
        var whole: String { words.reduce("") { Row.join($0, $1) } }

        /// Words joined by a space, except after the dash or dots of an address range (`lo-hi`).
        static func join(_ a: String, _ b: String) -> String {
            a.isEmpty ? b : a.hasSuffix("-") || a.hasSuffix("..") ? a + b : a + " " + b
        }
    }

    struct Box {
        var title: String
        var rows: [Row]
        var width = 0   // inner width, set by `fit`
        var id = 0      // unique in a drawing, for `fit`'s cache

        var natural: Int { max(title.count + 3, rows.map { $0.indent + $0.whole.count }.max() ?? 0) }
        /// No narrower than the longest word (or the title).
        var minimum: Int {
            let tokens = rows.flatMap { r in
                r.words.flatMap { $0.split(separator: " ") }.enumerated().map { r.indent + ($0.offset == 0 ? 0 : 2) + $0.element.count }
            }
            return max(title.count + 3, tokens.max() ?? 0, 12)
        }

        /// Lines this box takes at inner width `w`.
        func height(at w: Int) -> Int { rows.map { AsciiGraph.lines($0, width: w).count }.reduce(0, +) }
    }

    static func box(for h: Topology.HostNode) -> Box {
        var rows = h.notes.map { Row(0, [$0]) }
        for i in h.interfaces {
            rows.append(Row(0, [i.name], left: i.name == h.link ? 0 : nil))
            rows += i.addresses.map { Row(2, [$0.description]) }
        }
        rows += h.routes.map { Row(0, $0) }
        return Box(title: h.name, rows: rows)
    }

    static func box(for p: Topology.Port) -> Box {
        switch p.peer {
        case .host(let h):
            return box(for: h)
        case .group(let g):
            var rows = [Row(0, [g.summary.names])] + g.notes.map { Row(0, [$0]) }
            rows.append(Row(0, [g.link], left: 0))
            rows += g.summary.addresses.map { a in
                a.count == 1 ? Row(2, [a.span, a.qualifier])
                    : Row(2, ["\(a.low)\(a.consecutive ? "-" : "..")", "\(a.high)", a.qualifier])
            }
            rows += g.routes.map { Row(0, $0) }
            return Box(title: "\(g.summary.count) subscribers", rows: rows)
        }
    }

    static func router(_ t: Topology, right: inout [Box]) -> Box {
        var rows: [Row] = []
        let up = t.uplink
        rows.append(Row(0, ["\(up.context)  uplink domain"]))
        rows += up.notes.map { Row(2, [$0]) }
        rows.append(Row(2, [up.interface.name], left: t.uplinkHosts.isEmpty ? nil : 0))
        rows += up.interface.addresses.map { Row(4, [$0.description]) }
        rows += up.routes.map { Row(2, $0) }
        let n = t.nat
        rows.append(Row(2, ["NAT (IPv4) out \(n.interface):"]))
        rows.append(Row(4, ["\(n.inside)", "-> \(n.publicAddress)"]))
        rows.append(Row(4, [n.mapping]))
        let from = n.from.count > 4 ? "\(HostGroupSummary.range(n.from)) (\(n.from.count) domains)" : n.from.joined(separator: ", ")
        rows.append(Row(4, ["from", from]))
        if t.routesIPv6 { rows.append(Row(2, ["IPv6 routed, no NAT"])) }

        for d in t.subscribers {
            rows.append(.blank)
            rows.append(Row(0, ["\(d.context)  subscriber domain \(d.id ?? 0)"]))
            rows += d.notes.map { Row(2, [$0]) }
            rows += d.routes.map { Row(2, $0) }
            if !d.routedIn.isEmpty {
                rows.append(Row(2, ["routed in, no NAT:"]))
                rows += d.routedIn.map { Row(4, [$0.description]) }
            }
            rows.append(Row(2, ["\(d.interface.name)" + (d.interface.kind.map { " (\($0))" } ?? "")]))
            rows += d.interface.addresses.map { Row(4, [$0.description]) }
            for p in d.ports {
                right.append(box(for: p))
                let words = p.count == 1 ? ["port \(p.name)"] : ["\(p.count) ports", p.name]
                rows.append(Row(4, words, right: right.count - 1, bundle: p.count > 1))
            }
        }
        return Box(title: "\(t.router) (router)", rows: rows)
    }

    // MARK: layout

    static let gap = 5

    /// Inner widths: natural where the total fits; otherwise, one column at a time, the one
    /// whose narrowing makes the drawing least taller gives way (ties: the widest).
    static func fit(_ columns: inout [[Box]], width: Int, hasLeft: Bool, hasRight: Bool) {
        var widths = columns.map { $0.map(\.natural).max() ?? 0 }
        let minimums = columns.map { $0.map(\.minimum).max() ?? 0 }
        func total() -> Int { widths.reduce(0, +) + 4 * widths.count + gap * (widths.count - 1) }
        func apply(_ w: [Int]) -> [[Box]] {
            var c = columns
            for i in c.indices { for b in c[i].indices { c[i][b].width = w[i] } }
            return c
        }
        // Each box is wrapped once per width tried, and only measured.
        var cache: [Int: Laid] = [:]
        func laid(_ b: Box) -> Laid {
            let key = b.id << 16 | b.width
            if let l = cache[key] { return l }
            let l = lay(b)
            cache[key] = l
            return l
        }
        func height(_ w: [Int]) -> Int {
            let c = apply(w)
            return layout(left: hasLeft ? c[0] : [], router: c[hasLeft ? 1 : 0][0], right: hasRight ? c[c.count - 1] : [],
                          laid: laid, onlyHeight: true).height
        }
        while total() > width {
            let costs = widths.indices.filter { widths[$0] > minimums[$0] }.map { i -> (Int, Int) in
                var w = widths
                w[i] -= 1
                return (i, height(w))
            }
            guard let best = costs.min(by: { $0.1 != $1.1 ? $0.1 < $1.1 : widths[$0.0] > widths[$1.0] }) else { break }
            widths[best.0] -= 1
        }
        columns = apply(widths)
    }

    /// A row broken to the box's width: whole if it fits, else packed word by word (a word too
    /// long for the box is broken at its spaces, and only as a last resort cut).
    static func lines(_ r: Row, width: Int) -> [String] {
        let pad = String(repeating: " ", count: r.indent)
        if r.indent + r.whole.count <= width { return [pad + r.whole] }
        let more = String(repeating: " ", count: r.indent + 2)
        var out: [String] = []
        var current = pad
        var fresh = true
        func add(_ token: String) {
            if fresh {
                current += token
                fresh = false
            } else if Row.join(current, token).count <= width {
                current = Row.join(current, token)
            } else {
                out.append(current)
                current = more + token
            }
        }
        for w in r.words {
            let room = width - (out.isEmpty && fresh ? r.indent : r.indent + 2)
            if w.count <= room { add(w) } else { w.split(separator: " ").forEach { add(String($0)) } }
        }
        out.append(current)
        return out.flatMap { l -> [String] in
            var l = l, parts: [String] = []
            while l.count > width {
                parts.append(String(l.prefix(width)))
                l = more + l.dropFirst(width)
            }
            return parts + [l]
        }
    }

    struct Laid {
        var lines: [String]
        /// Line index (within `lines`) -> link id on each side.
        var left: [Int: Int] = [:]
        var right: [Int: (id: Int, bundle: Bool)] = [:]
    }

    static func lay(_ b: Box) -> Laid {
        var out = Laid(lines: [])
        for r in b.rows {
            let ls = lines(r, width: b.width)
            if let l = r.left { out.left[out.lines.count] = l }
            if let rt = r.right { out.right[out.lines.count] = (rt, r.bundle) }
            out.lines += ls
        }
        return out
    }

    static func draw(_ b: Box, _ lines: [String]) -> [String] {
        let top = "+- \(b.title) " + String(repeating: "-", count: max(0, b.width + 4 - b.title.count - 5)) + "+"
        let body = lines.map { "| " + $0 + String(repeating: " ", count: b.width - $0.count) + " |" }
        return [top] + body + ["+" + String(repeating: "-", count: b.width + 2) + "+"]
    }

    /// Places the boxes so each link is one straight line: where a router line links to a box,
    /// the box is moved to that line, or the router line down to the box (blank lines above it).
    static func layout(left: [Box], router: Box, right: [Box], laid lay: (Box) -> Laid,
                       onlyHeight: Bool = false) -> (lines: [String], height: Int) {
        let leftLaid = left.map(lay), rightLaid = right.map(lay)
        func offset(_ l: Laid) -> Int { 1 + (l.left.keys.min() ?? 0) }   // its link line, below the top border
        let r = lay(router)
        var routerLines: [String] = []
        var leftTop = [Int?](repeating: nil, count: left.count), rightTop = [Int?](repeating: nil, count: right.count)
        var links: [(row: Int, side: Int, bundle: Bool)] = []   // side -1 left of the router, +1 right
        var row = 1, nextLeft = 0, nextRight = 0
        for (i, line) in r.lines.enumerated() {
            var need = row
            if let id = r.right[i]?.id { need = max(need, nextRight + offset(rightLaid[id])) }
            if let id = r.left[i] { need = max(need, nextLeft + offset(leftLaid[id])) }
            while row < need { routerLines.append(""); row += 1 }
            if let (id, bundle) = r.right[i] {
                rightTop[id] = row - offset(rightLaid[id])
                nextRight = rightTop[id]! + rightLaid[id].lines.count + 2
                links.append((row, 1, bundle))
            }
            if let id = r.left[i] {
                leftTop[id] = row - offset(leftLaid[id])
                nextLeft = leftTop[id]! + leftLaid[id].lines.count + 2
                links.append((row, -1, false))
            }
            routerLines.append(line)
            row += 1
        }
        // Boxes without a link to the router go below the others.
        for i in leftTop.indices where leftTop[i] == nil { leftTop[i] = nextLeft; nextLeft += leftLaid[i].lines.count + 2 }
        for i in rightTop.indices where rightTop[i] == nil { rightTop[i] = nextRight; nextRight += rightLaid[i].lines.count + 2 }

        if onlyHeight { return ([], max(routerLines.count + 2, nextLeft, nextRight)) }
        let leftWidth = left.isEmpty ? 0 : left[0].width + 4 + gap
        let routerX = leftWidth, rightX = routerX + router.width + 4 + gap
        let routerDrawn = draw(router, routerLines)
        let height = max(routerDrawn.count, nextLeft, nextRight)
        var canvas = [[Character]](repeating: [], count: height)
        func put(_ s: String, _ y: Int, _ x: Int) {
            if canvas[y].count < x { canvas[y] += [Character](repeating: " ", count: x - canvas[y].count) }
            let chars = Array(s)
            for (k, c) in chars.enumerated() {
                if x + k < canvas[y].count { canvas[y][x + k] = c } else { canvas[y].append(c) }
            }
        }
        for (k, l) in routerDrawn.enumerated() { put(l, k, routerX) }
        for (i, b) in left.enumerated() { for (k, l) in draw(b, leftLaid[i].lines).enumerated() { put(l, leftTop[i]! + k, 0) } }
        for (i, b) in right.enumerated() { for (k, l) in draw(b, rightLaid[i].lines).enumerated() { put(l, rightTop[i]! + k, rightX) } }
        for l in links {
            let x = l.side < 0 ? routerX - gap : rightX - gap
            put(String(repeating: l.bundle ? "=" : "-", count: gap), l.row, x)
        }
        return (canvas.map { String($0).replacingTrailingSpaces() }, height)
    }
}

extension String {
    func replacingTrailingSpaces() -> String {
        var s = Substring(self)
        while s.last == " " { s = s.dropLast() }
        return String(s)
    }
}
