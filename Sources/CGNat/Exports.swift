// The runtime builds on the pure core; its users (the command line, tests) see both.
@_exported import CGNatCore
