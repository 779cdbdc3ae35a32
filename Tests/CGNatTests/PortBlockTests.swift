import Testing
import CGNatCore
import NetAddress

@Suite struct PortBlockTests {
    func a(_ s: String) -> IPAddress { IPAddress(s)! }
    func p(_ s: String) -> IPPrefix { IPPrefix(s)! }

    // 2 domains x 128 inside addresses, 16 public addresses, 1024-65535 in blocks of 512:
    // 126 subscribers per address, 256 subscribers on 3 addresses.
    var policy: PortBlockPolicy {
        PortBlockPolicy(pool: [p("198.51.100.0/28")], insideRange: p("100.64.0.0/25"), maxDomainID: 2)
    }

    @Test func forwardIsDeterministicAndDisjoint() {
        let pol = policy
        #expect(pol.problems().isEmpty)
        #expect(pol.subscribersPerAddress == 126)
        #expect(pol.allocation(domainID: 1, inside: a("100.64.0.0")) ==
                .init(publicAddress: a("198.51.100.0"), ports: 1024...1535))
        #expect(pol.allocation(domainID: 1, inside: a("100.64.0.1"))?.ports == 1536...2047)
        // Same inside address, other domain: another subscriber, another block.
        let blue = pol.allocation(domainID: 1, inside: a("100.64.0.1"))!
        let red = pol.allocation(domainID: 2, inside: a("100.64.0.1"))!
        #expect(blue != red)
        #expect(red.publicAddress == a("198.51.100.1"))  // index 129 -> address 1, slot 3
        #expect(red.ports == 2560...3071)
        var seen = Set<String>()
        for d in UInt32(1)...2 {
            for i in 0..<128 {
                let al = pol.allocation(domainID: d, inside: PortBlockTests.v4(100, 64, 0, UInt8(i)))!
                for port in stride(from: Int(al.ports.lowerBound), through: Int(al.ports.upperBound), by: 512) {
                    #expect(seen.insert("\(al.publicAddress):\(port)").inserted)
                }
            }
        }
        #expect(seen.count == 256)
    }

    @Test func reverseLookupInvertsForward() {
        let pol = policy
        for d in UInt32(1)...2 {
            for i in [0, 1, 63, 125, 126, 127] {
                let inside = PortBlockTests.v4(100, 64, 0, UInt8(i))
                let al = pol.allocation(domainID: d, inside: inside)!
                for port in [al.ports.lowerBound, al.ports.lowerBound + 100, al.ports.upperBound] {
                    #expect(pol.owner(publicAddress: al.publicAddress, port: port) == .init(domainID: d, inside: inside))
                }
            }
        }
        #expect(pol.owner(publicAddress: a("198.51.100.0"), port: 80) == nil)       // below the range
        #expect(pol.owner(publicAddress: a("198.51.100.0"), port: 65535) == .init(domainID: 1, inside: a("100.64.0.125")))
        var tail = pol
        tail.blockSize = 1000   // 64 blocks of 1000 leave 512 ports at the top that no block fills
        #expect(tail.problems().isEmpty)
        #expect(tail.owner(publicAddress: a("198.51.100.0"), port: 65024) == nil)
        #expect(tail.owner(publicAddress: a("198.51.100.0"), port: 65023) == .init(domainID: 1, inside: a("100.64.0.63")))
        #expect(pol.owner(publicAddress: a("198.51.100.15"), port: 2000) == nil)    // no subscriber that far
        #expect(pol.owner(publicAddress: a("203.0.113.1"), port: 2000) == nil)      // not in the pool
        #expect(pol.allocation(domainID: 3, inside: a("100.64.0.1")) == nil)
        #expect(pol.allocation(domainID: 1, inside: a("100.64.1.1")) == nil)
    }

    @Test func tooSmallPoolNamesTheNumbers() {
        // The seed's single address for 10 domains x 128 addresses: 1280 x 512 ports do not fit.
        let pol = PortBlockPolicy(pool: [p("100.64.0.1/32")], insideRange: p("100.64.0.0/25"), maxDomainID: 10)
        let problems = pol.problems()
        #expect(problems.count == 1)
        #expect(problems[0].contains("1280 subscribers x 512 ports need 655360 ports, but 1 public address(es) x 64512 ports give 64512"))
        #expect(problems[0].contains("at most 50 ports each"))
        var fits = pol
        fits.blockSize = 50
        #expect(fits.problems().isEmpty)
        #expect(pol.allocation(domainID: 1, inside: a("100.64.0.1")) == nil)
    }

    @Test func addressArithmeticCarriesAcrossBytes() {
        #expect(a("100.64.0.255").advanced(by: 1) == a("100.64.1.0"))
        #expect(a("2001:db8::ffff").advanced(by: 0x10001) == a("2001:db8::2:0"))
        #expect(a("100.64.1.0").distance(from: a("100.64.0.255")) == 1)
        #expect(a("198.51.100.15").distance(from: a("198.51.100.0")) == 15)
    }

    static func v4(_ a: UInt8, _ b: UInt8, _ c: UInt8, _ d: UInt8) -> IPAddress { IPAddress(family: .v4, bytes: [a, b, c, d]) }
}
