/// Checks UTF-8 Encoded Strings by the rules of MQTT 5.0 §1.5.4 (and MQTT 3.1.1 §1.5.3).
///
/// Written by hand rather than through `String(validating:)` because the decoder must check a
/// slice of the receive buffer without allocating a `String`, and because MQTT adds a rule Unicode
/// does not have: U+0000 is forbidden. Surrogates (U+D800…U+DFFF), overlong forms and code points
/// above U+10FFFF are rejected as ill-formed, per the Unicode standard's Table 3-7.
enum UTF8Validation {
    static func isValidMQTTString(_ bytes: UnsafeRawBufferPointer) -> Bool {
        let count = bytes.count
        var index = 0
        while index < count {
            let lead = bytes[index]
            if lead < 0x80 {
                if lead == 0 { return false }
                index &+= 1
                continue
            }
            if lead < 0xC2 { return false }  // a continuation byte, or an overlong two-byte form
            if lead < 0xE0 {
                guard index &+ 1 < count, isContinuation(bytes[index &+ 1]) else { return false }
                index &+= 2
                continue
            }
            if lead < 0xF0 {
                guard index &+ 2 < count else { return false }
                let second = bytes[index &+ 1]
                let lower: UInt8 = lead == 0xE0 ? 0xA0 : 0x80  // 0xE0 0x80…0x9F would be overlong
                let upper: UInt8 = lead == 0xED ? 0x9F : 0xBF  // 0xED 0xA0…0xBF encodes a surrogate
                guard second >= lower, second <= upper, isContinuation(bytes[index &+ 2]) else { return false }
                index &+= 3
                continue
            }
            if lead < 0xF5 {
                guard index &+ 3 < count else { return false }
                let second = bytes[index &+ 1]
                let lower: UInt8 = lead == 0xF0 ? 0x90 : 0x80  // 0xF0 0x80…0x8F would be overlong
                let upper: UInt8 = lead == 0xF4 ? 0x8F : 0xBF  // beyond U+10FFFF
                guard second >= lower, second <= upper, isContinuation(bytes[index &+ 2]),
                    isContinuation(bytes[index &+ 3])
                else { return false }
                index &+= 4
                continue
            }
            return false
        }
        return true
    }

    static func isContinuation(_ byte: UInt8) -> Bool { byte & 0xC0 == 0x80 }
}
