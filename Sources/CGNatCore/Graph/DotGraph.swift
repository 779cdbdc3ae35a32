/// The topology in Graphviz's DOT language, left to right: the uplink host, the router (a
/// cluster of its domains), the subscribers. Every box is an HTML-like table whose interface
/// rows are ports, so each link runs between the two interfaces it joins.
public enum DotGraph {
    public static func render(_ t: Topology) -> String {
        var out: [String] = []
        let title = t.headline
        out.append("graph \(quote(t.lab)) {")
        out.append("  graph [rankdir=LR, ranksep=0.8, nodesep=0.25, fontname=\"Helvetica\", fontsize=14, labelloc=t, label=\(quote(title))];")
        out.append("  node [shape=plain, fontname=\"Helvetica\", fontsize=10];")
        out.append("  edge [fontname=\"Helvetica\", fontsize=9, color=\"#555555\"];")
        out.append("")

        for h in t.uplinkHosts { out.append("  \(quote(h.name)) [label=<\(table(h))>];") }
        out.append("  subgraph \(quote("cluster_\(t.router)")) {")
        out.append("    label=<<b>\(html(t.router)) (router)</b>>; style=rounded; color=\"#333333\"; margin=12;")
        out += domain(t.uplink, t, fill: "#e8f0fe")
        for d in t.subscribers { out += domain(d, t, fill: "#e6f4ea") }
        out.append("  }")
        var groups = 0
        for d in t.subscribers {
            for (k, p) in d.ports.enumerated() {
                switch p.peer {
                case .host(let h):
                    out.append("  \(quote(h.name)) [label=<\(table(h))>];")
                    out.append("  \(quote(d.context)):p\(k) -- \(quote(h.name)):link;")
                case .group(let g):
                    let id = "group\(groups)"
                    groups += 1
                    out.append("  \(quote(id)) [label=<\(table(g))>];")
                    out.append("  \(quote(d.context)):p\(k) -- \(quote(id)):link [penwidth=3, label=\(quote("\(p.count) links"))];")
                }
            }
        }
        out.append("")
        for h in t.uplinkHosts { out.append("  \(quote(h.name)):link -- \(quote(t.uplink.context)):link;") }
        // Between domains: routes, not links (on netns a transfer link, said in the domain's notes).
        for d in t.subscribers {
            let label = t.subscribers.count <= 4 ? ", label=\"routed\"" : ""   // many labels only overlap
            out.append("  \(quote(t.uplink.context)):routes -- \(quote(d.context)):routes [style=dashed\(label)];")
        }
        out.append("}")
        return out.joined(separator: "\n") + "\n"
    }

    static func domain(_ d: Topology.Domain, _ t: Topology, fill: String) -> [String] {
        var rows: [String] = []
        let heading = d.id == nil ? "uplink domain" : "subscriber domain \(d.id!)"
        rows.append(cell("<b>\(html(d.context))  \(html(heading))</b>", port: "routes", bg: "#ffffff"))
        rows += d.notes.map { cell("<i>\(html($0))</i>") }
        let kind = d.interface.kind.map { " (\(html($0)))" } ?? ""
        rows.append(cell(lines(["<b>\(html(d.interface.name))\(kind)</b>"] + d.interface.addresses.map { html($0.description) }),
                         port: d.id == nil ? "link" : nil))
        rows += d.routes.map { cell(html($0.joined(separator: " "))) }
        if d.id == nil {
            let n = t.nat
            let from = n.from.count > 4 ? "\(HostGroupSummary.range(n.from)) (\(n.from.count) domains)" : n.from.joined(separator: ", ")
            rows.append(cell(lines(["<b>NAT (IPv4) out \(html(n.interface))</b>",
                                    "\(html(n.inside.description)) -&gt; \(html(n.publicAddress))", html(n.mapping),
                                    "from \(html(from))"]), bg: "#ffe08a"))
            if t.routesIPv6 { rows.append(cell("IPv6 routed, no NAT")) }
        }
        if !d.routedIn.isEmpty {
            rows.append(cell(lines(["routed in, no NAT:"] + d.routedIn.map { html($0.description) })))
        }
        for (k, p) in d.ports.enumerated() {
            rows.append(cell(p.count == 1 ? "port \(html(p.name))" : "\(p.count) ports \(html(p.name))", port: "p\(k)", bg: "#ffffff"))
        }
        return [
            "    subgraph \(quote("cluster_\(d.context)")) {",
            "      label=\"\"; style=\"rounded,filled\"; fillcolor=\(quote(fill)); color=\"#888888\";",
            "      \(quote(d.context)) [label=<\(frame(rows))>];",
            "    }",
        ]
    }

    static func table(_ h: Topology.HostNode) -> String {
        var rows = [cell("<b>\(html(h.name))</b>", bg: "#dddddd")]
        rows += h.notes.map { cell("<i>\(html($0))</i>") }
        for i in h.interfaces {
            rows.append(cell(lines(["<b>\(html(i.name))</b>"] + i.addresses.map { html($0.description) }),
                             port: i.name == h.link ? "link" : nil))
        }
        rows += h.routes.map { cell(html($0.joined(separator: " "))) }
        return frame(rows, bg: "#f7f7f7")
    }

    static func table(_ g: Topology.HostGroup) -> String {
        var rows = [cell("<b>\(g.summary.count) subscribers</b>", bg: "#dddddd"), cell(html(g.summary.names))]
        rows += g.notes.map { cell("<i>\(html($0))</i>") }
        rows.append(cell(lines(["<b>\(html(g.link))</b>"] + g.summary.addresses.map { html($0.description) }), port: "link"))
        rows += g.routes.map { cell(html($0.joined(separator: " "))) }
        return frame(rows, bg: "#f7f7f7")
    }

    static func frame(_ rows: [String], bg: String? = nil) -> String {
        let b = bg.map { " bgcolor=\"\($0)\"" } ?? ""
        return "<table border=\"1\" cellborder=\"0\" cellspacing=\"0\" cellpadding=\"4\"\(b)>" + rows.joined() + "</table>"
    }

    static func cell(_ content: String, port: String? = nil, bg: String? = nil) -> String {
        let p = port.map { " port=\"\($0)\"" } ?? ""
        let b = bg.map { " bgcolor=\"\($0)\"" } ?? ""
        let text = content.contains("<br/>") ? content : padded(content)
        return "<tr><td align=\"left\" balign=\"left\"\(p)\(b)>\(text)</td></tr>"
    }

    static func lines(_ parts: [String]) -> String { parts.map(padded).joined(separator: "<br/>") }


    /// Graphviz measures text a little narrower than SVG viewers draw it: trailing no-break
    /// spaces widen the box without showing (an SVG viewer drops trailing blanks).
    static func padded(_ s: String) -> String {
        var visible = 0, inTag = false
        for c in s { if c == "<" { inTag = true } else if c == ">" { inTag = false } else if !inTag { visible += 1 } }
        return s + String(repeating: "&#160;", count: 2 + visible / 12)
    }

    /// A DOT ID: always quoted, quotes and backslashes escaped.
    static func quote(_ s: String) -> String {
        "\"" + s.replacingAll("\\", "\\\\").replacingAll("\"", "\\\"") + "\""
    }

    /// Text inside an HTML-like label.
    static func html(_ s: String) -> String {
        s.replacingAll("&", "&amp;").replacingAll("<", "&lt;").replacingAll(">", "&gt;").replacingAll("\"", "&quot;")
    }
}

extension String {
    /// Foundation-free replacement (the core does not import Foundation).
    func replacingAll(_ target: Character, _ replacement: String) -> String {
        var out = ""
        out.reserveCapacity(count)
        for c in self { if c == target { out += replacement } else { out.append(c) } }
        return out
    }
}
