// Addresses are pure values shared with the core; every user of Netlink sees them as before.
@_exported import NetAddress
