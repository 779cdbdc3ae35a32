/// RFC 3339 times as milliseconds since the Unix epoch, both ways, in pure arithmetic (no libc
/// time zone: the offset is in the text). Used by `whois --at` and by the NAT log store.
public enum Timestamp {
    public struct Invalid: Error, CustomStringConvertible, Sendable {
        public var text: String
        public var why: String
        public var description: String {
            "'\(text)' is not an RFC 3339 time (\(why)): write e.g. 2026-12-01T09:23:19.412Z or 2026-12-01T10:23:19.412+01:00"
        }
    }

    /// Parses `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)`; `t`/`z` and a space for `T` are accepted
    /// as RFC 3339 allows. Fractions beyond milliseconds are truncated. A leap second (:60) is
    /// refused: conntrack never reports one.
    public static func parse(_ text: String) throws -> Int64 {
        let b = Array(text.utf8)
        var i = 0
        func fail(_ why: String) -> Invalid { Invalid(text: text, why: why) }
        func digits(_ n: Int, _ what: String) throws -> Int {
            guard i + n <= b.count else { throw fail("\(what) missing") }
            var v = 0
            for k in 0..<n {
                let c = b[i + k]
                guard c >= 48 && c <= 57 else { throw fail("\(what) is not \(n) digits") }
                v = v * 10 + Int(c - 48)
            }
            i += n
            return v
        }
        func expect(_ c: UInt8, _ what: String) throws {
            guard i < b.count, b[i] == c else { throw fail("\(what) expected at character \(i + 1)") }
            i += 1
        }
        let year = try digits(4, "year")
        try expect(UInt8(ascii: "-"), "'-'")
        let month = try digits(2, "month")
        try expect(UInt8(ascii: "-"), "'-'")
        let day = try digits(2, "day")
        guard i < b.count, [UInt8(ascii: "T"), UInt8(ascii: "t"), UInt8(ascii: " ")].contains(b[i]) else {
            throw fail("'T' and a time of day expected after the date")
        }
        i += 1
        let hour = try digits(2, "hour")
        try expect(UInt8(ascii: ":"), "':'")
        let minute = try digits(2, "minute")
        try expect(UInt8(ascii: ":"), "':'")
        let second = try digits(2, "second")
        var millis = 0
        if i < b.count, b[i] == UInt8(ascii: ".") {
            i += 1
            var n = 0
            while i < b.count, b[i] >= 48 && b[i] <= 57 {
                if n < 3 { millis = millis * 10 + Int(b[i] - 48) }
                n += 1; i += 1
            }
            guard n > 0 else { throw fail("digits expected after '.'") }
            for _ in n..<max(n, 3) { millis *= 10 }
        }
        guard i < b.count else { throw fail("no time zone: end with Z or an offset such as +01:00") }
        var offsetMinutes = 0
        switch b[i] {
        case UInt8(ascii: "Z"), UInt8(ascii: "z"): i += 1
        case UInt8(ascii: "+"), UInt8(ascii: "-"):
            let sign = b[i] == UInt8(ascii: "-") ? -1 : 1
            i += 1
            let oh = try digits(2, "offset hours")
            try expect(UInt8(ascii: ":"), "':' in the offset")
            let om = try digits(2, "offset minutes")
            guard oh <= 23, om <= 59 else { throw fail("offset out of range") }
            offsetMinutes = sign * (oh * 60 + om)
        default: throw fail("time zone expected: Z or an offset such as +01:00")
        }
        guard i == b.count else { throw fail("unexpected text after the time zone") }
        guard (1...12).contains(month) else { throw fail("month \(month)") }
        guard day >= 1, day <= daysIn(month: month, year: year) else { throw fail("day \(day) of month \(month)") }
        guard hour <= 23, minute <= 59, second <= 59 else { throw fail("time of day out of range") }
        let days = daysFromCivil(year: year, month: month, day: day)
        let seconds = Int64(days) * 86400 + Int64(hour * 3600 + minute * 60 + second) - Int64(offsetMinutes * 60)
        return seconds * 1000 + Int64(millis)
    }

    /// `2026-12-01T09:23:19.412Z`: UTC with milliseconds.
    public static func format(milliseconds ms: Int64) -> String {
        let secs = ms >= 0 ? ms / 1000 : (ms - 999) / 1000
        let frac = Int(ms - secs * 1000)
        let days = secs >= 0 ? secs / 86400 : (secs - 86399) / 86400
        let rem = Int(secs - days * 86400)
        let (y, m, d) = civil(fromDays: Int(days))
        return "\(pad(y, 4))-\(pad(m, 2))-\(pad(d, 2))T\(pad(rem / 3600, 2)):\(pad(rem / 60 % 60, 2)):\(pad(rem % 60, 2)).\(pad(frac, 3))Z"
    }

    static func pad(_ v: Int, _ w: Int) -> String {
        let s = String(v)
        return s.count >= w ? s : String(repeating: "0", count: w - s.count) + s
    }

    static func isLeap(_ y: Int) -> Bool { (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 }

    static func daysIn(month: Int, year: Int) -> Int {
        switch month {
        case 2: return isLeap(year) ? 29 : 28
        case 4, 6, 9, 11: return 30
        default: return 31
        }
    }

    /// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil).
    static func daysFromCivil(year: Int, month: Int, day: Int) -> Int {
        let y = month <= 2 ? year - 1 : year
        let era = (y >= 0 ? y : y - 399) / 400
        let yoe = y - era * 400
        let mp = (month + 9) % 12
        let doy = (153 * mp + 2) / 5 + day - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        return era * 146097 + doe - 719468
    }

    static func civil(fromDays z0: Int) -> (Int, Int, Int) {
        let z = z0 + 719468
        let era = (z >= 0 ? z : z - 146096) / 146097
        let doe = z - era * 146097
        let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let d = doy - (153 * mp + 2) / 5 + 1
        let m = mp < 10 ? mp + 3 : mp - 9
        return (yoe + era * 400 + (m <= 2 ? 1 : 0), m, d)
    }
}
