// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "cgnat",
    platforms: [.macOS(.v13)],
    products: [
        .executable(name: "cgnat", targets: ["cgnat"]),
        .executable(name: "cgnat-bench", targets: ["cgnat-bench"]),
        .executable(name: "cgnat-events-bench", targets: ["cgnat-events-bench"]),
        .library(name: "CGNat", targets: ["CGNat"]),
        .library(name: "Netlink", targets: ["Netlink"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
    ],
    targets: [
        // Linux uapi headers (netlink, rtnetlink, nfnetlink, ...) and a few macros as inline functions.
        .target(name: "CNetlinkShim"),
        // Netlink sockets, codec, rtnetlink and ctnetlink messages, named network namespaces.
        .target(name: "Netlink", dependencies: ["CNetlinkShim"]),
        // The lab: model, plan, ruleset, apply, check, status.
        .target(name: "CGNat", dependencies: ["Netlink", "CNetlinkShim"]),
        .executableTarget(
            name: "cgnat",
            dependencies: ["CGNat", .product(name: "ArgumentParser", package: "swift-argument-parser")]),
        .executableTarget(name: "cgnat-bench", dependencies: ["CGNat", "Netlink"]),
        // Benchmark of `cgnat events` against `conntrack -E` under a new-flow load.
        .executableTarget(name: "cgnat-events-bench", dependencies: ["CGNat", "Netlink"]),
        .testTarget(name: "NetlinkTests", dependencies: ["Netlink"]),
        .testTarget(name: "CGNatTests", dependencies: ["CGNat"]),
        .testTarget(name: "IntegrationTests", dependencies: ["CGNat", "Netlink"]),
    ],
    // Swift 5 mode: file descriptors and C pointers cross our own namespace threads on purpose;
    // the checks of Swift 6 mode would need wrappers everywhere without adding safety here.
    swiftLanguageModes: [.v5]
)
