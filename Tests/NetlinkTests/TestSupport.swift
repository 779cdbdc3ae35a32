@testable import Netlink

/// Bytes from a hex string; whitespace is ignored so captures can be laid out by field.
func hex(_ s: String) -> [UInt8] {
    let digits = s.filter { !$0.isWhitespace }
    precondition(digits.count % 2 == 0, "odd hex string")
    var out: [UInt8] = []
    var i = digits.startIndex
    while i < digits.endIndex {
        let j = digits.index(i, offsetBy: 2)
        out.append(UInt8(digits[i..<j], radix: 16)!)
        i = j
    }
    return out
}

/// A message with nlmsg_seq and nlmsg_pid zeroed: captures carry iproute2's time-based sequence
/// numbers, our socket uses its own.
func normalized(_ bytes: [UInt8]) -> [UInt8] {
    var b = bytes
    for i in 8..<16 where i < b.count { b[i] = 0 }
    return b
}

func wire(_ m: NetlinkMessage) -> [UInt8] { normalized(m.encoded()) }

func hexString(_ b: [UInt8]) -> String {
    let digits = Array("0123456789abcdef")
    return String(b.flatMap { [digits[Int($0 >> 4)], digits[Int($0 & 15)]] })
}

func ip(_ s: String) -> IPAddress { IPAddress(s)! }
func pfx(_ s: String) -> IPPrefix { IPPrefix(s)! }
