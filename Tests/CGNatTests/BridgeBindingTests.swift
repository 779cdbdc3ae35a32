import Foundation
import Testing
@testable import CGNat

/// Per-port source binding on the subscriber bridges, from the lab model (no root).
@Suite struct BridgeBindingTests {
    let lab = Lab.seed()

    @Test func netnsHasOneTablePerDomainNamespace() {
        let tables = BridgeBinding.tables(lab, backend: .netns)
        #expect(tables.map(\.namespace) == ["cgnat-main-blue", "cgnat-main-red"])
        #expect(tables.map(\.domains) == [["blue"], ["red"]])
        // Each host's own addresses, interface and loopback, keyed on its port (named after it).
        let blue = tables[0].text
        #expect(blue.contains("table bridge cgnat_bind {"))
        #expect(blue.contains("\"blue_c1\" . 100.64.0.1, \"blue_c2\" . 100.64.0.2, \"blue_c2\" . 192.0.2.2"))
        #expect(blue.contains("\"blue_c1\" . 2001:db8:b:10::1, \"blue_c2\" . 2001:db8:b:10::2"))
        #expect(!blue.contains("red_c1"), "red's hosts are not on blue's bridge")
        #expect(blue.contains("iifname { \"blue_c1\", \"blue_c2\" } counter drop comment \"\(BridgeBinding.Comment.unbound)\""))
        #expect(tables[1].text.contains("\"red_c1\" . 100.64.0.1 }"))
    }

    @Test func vrfHasOneTableForEveryBridgeInTheRouter() {
        let tables = BridgeBinding.tables(lab, backend: .vrf)
        #expect(tables.map(\.namespace) == ["cgnat-main"])
        #expect(tables[0].domains == ["blue", "red"])
        // blue_c1 and red_c1 share 100.64.0.1: their ports tell them apart.
        #expect(tables[0].text.contains("\"blue_c1\" . 100.64.0.1") && tables[0].text.contains("\"red_c1\" . 100.64.0.1"))
    }

    /// What a port may send: its own addresses as IP source and ARP sender, IPv6 link-local and
    /// `::` (DAD); everything else from a host's port is counted and dropped.
    @Test func rulesAcceptOwnAddressesAndDropTheRest() {
        let text = BridgeBinding.tables(lab, backend: .netns)[0].text
        let chain = text.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }.drop { !$0.hasPrefix("chain prerouting") }
        #expect(Array(chain.prefix(8)) == [
            "chain prerouting {",
            "type filter hook prerouting priority filter; policy accept;",
            "ether type ip iifname . ip saddr @ipv4_bound accept comment \"IPv4 from the port's own addresses\"",
            "ether type ip6 iifname . ip6 saddr @ipv6_bound accept comment \"IPv6 from the port's own addresses\"",
            "ether type ip6 ip6 saddr { fe80::/10, :: } accept comment \"IPv6 link-local and unspecified (DAD, MLD) sources\"",
            "ether type arp iifname . arp saddr ip @ipv4_bound accept comment \"ARP whose sender is the port's own address\"",
            "ether type arp arp saddr ip 0.0.0.0 accept comment \"ARP probes (sender 0.0.0.0, RFC 5227)\"",
            "iifname { \"blue_c1\", \"blue_c2\" } counter drop comment \"source not bound to the bridge port\"",
        ])
    }

    @Test func plansLoadTheTablesAndRenderShowsThem() {
        for backend in Backend.allCases {
            let plan = backend == .netns ? Plan.netns(lab) : Plan.vrf(lab)
            for t in BridgeBinding.tables(lab, backend: backend) {
                #expect(plan.steps.contains(.loadRuleset(namespace: t.namespace, ruleset: t.text)), "\(backend) \(t.namespace)")
                #expect(ShellRenderer.render(plan).contains("ip netns exec \(t.namespace) nft -f - <<'CGNAT_RULESET'\n\(t.text)CGNAT_RULESET"))
            }
        }
    }

    /// A thousand subscribers are set elements, not rules: the chain stays a handful of rules.
    @Test func scalesAsSetElements() {
        let big = Lab.seedScaled(domains: 1, perDomain: 1000)
        let t = BridgeBinding.tables(big, backend: .netns)
        #expect(t.count == 1)
        let rules = t[0].text.split(separator: "\n").filter { $0.contains(" accept comment ") || $0.contains(" drop comment ") }
        #expect(rules.count == 6)
        #expect(t[0].text.components(separatedBy: "\" . 100.64.").count - 1 == 1000)
        #expect(t[0].text.components(separatedBy: "\" . 2001:db8:").count - 1 == 1000)
    }

    @Test func aDomainWithoutHostsStillLoads() {
        var l = lab
        l.hosts.removeAll { $0.name == "red_c1" }
        let red = BridgeBinding.tables(l, backend: .netns)[1].text
        #expect(!red.contains("elements") && !red.contains("drop"))
    }
}
