// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "cgnat",
    platforms: [.macOS(.v13)],
    products: [
        .executable(name: "cgnat", targets: ["cgnat"]),
        .executable(name: "cgnat-lab", targets: ["cgnat-lab"]),
        .executable(name: "cgnat-bench", targets: ["cgnat-bench"]),
        .executable(name: "cgnat-events-bench", targets: ["cgnat-events-bench"]),
        .executable(name: "cgnat-store", targets: ["cgnat-store"]),
        .library(name: "CGNat", targets: ["CGNat"]),
        .library(name: "CGNatCore", targets: ["CGNatCore"]),
        .library(name: "Netlink", targets: ["Netlink"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        // YAML lab files, only in the `cgnat-lab` helper: Yams needs Foundation, which the main binary avoids.
        .package(url: "https://github.com/jpsim/Yams", from: "5.0.1"),
        // The NAT log store (SQLite), only in the `cgnat-store` helper: GRDB needs Foundation too.
        .package(url: "https://github.com/groue/GRDB.swift", from: "7.10.0"),
    ],
    targets: [
        // Linux uapi headers (netlink, rtnetlink, nfnetlink, ...) and a few macros as inline functions.
        .target(name: "CNetlinkShim"),
        // Netlink sockets, codec, rtnetlink and ctnetlink messages, named network namespaces.
        // IPv4/IPv6 addresses and prefixes: pure values, shared by the core and the netlink layer.
        .target(name: "NetAddress"),
        .target(name: "Netlink", dependencies: ["CNetlinkShim", "NetAddress"]),
        // The pure core: model, plans, ruleset, render, check matrix, formatters. No root, no
        // syscalls beyond memory: everything here is tested without root.
        .target(name: "CGNatCore", dependencies: ["NetAddress"]),
        // The runtime on top of the core: apply, probe, events, trace, sessions, status.
        .target(name: "CGNat", dependencies: ["CGNatCore", "Netlink", "CNetlinkShim"]),
        .executableTarget(
            name: "cgnat",
            dependencies: ["CGNat", .product(name: "ArgumentParser", package: "swift-argument-parser")]),
        // Lab files: YAML (Yams, with line and column marks) to the core's LabSpec. Foundation comes
        // along with Yams, so only the `cgnat-lab` helper links this, never `cgnat` itself.
        .target(name: "CGNatLabFile", dependencies: ["CGNatCore", .product(name: "Yams", package: "Yams")]),
        .executableTarget(name: "cgnat-lab", dependencies: ["CGNatLabFile"]),
        // The NAT log store: mapping records and control lines in, batched SQLite transactions, and
        // the queries behind `whois --at`. Like CGNatLabFile, only its helper links it.
        .target(name: "CGNatStore", dependencies: ["CGNatCore", .product(name: "GRDB", package: "GRDB.swift")]),
        .executableTarget(name: "cgnat-store", dependencies: ["CGNatStore"]),
        .executableTarget(name: "cgnat-bench", dependencies: ["CGNat", "Netlink"]),
        // Benchmark of `cgnat events` against `conntrack -E` under a new-flow load.
        .executableTarget(name: "cgnat-events-bench", dependencies: ["CGNat", "Netlink"]),
        .testTarget(name: "NetlinkTests", dependencies: ["Netlink"]),
        .testTarget(name: "CGNatTests", dependencies: ["CGNat", "CGNatCore", "Netlink"]),
        .testTarget(name: "LabFileTests", dependencies: ["CGNatLabFile", "CGNatCore"], exclude: ["Fixtures"]),
        .testTarget(name: "StoreTests", dependencies: ["CGNatStore", "CGNat"]),
        .testTarget(name: "IntegrationTests", dependencies: ["CGNat", "Netlink"]),
    ],
    // Swift 5 mode: file descriptors and C pointers cross our own namespace threads on purpose;
    // the checks of Swift 6 mode would need wrappers everywhere without adding safety here.
    swiftLanguageModes: [.v5]
)
