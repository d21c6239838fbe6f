/// What a relay loop puts in each epoll registration's data, so that an event names what it is for.
///
/// A connection's socket is named by its slot, its side and a registration id that is new for every
/// registration the loop makes (NIO's `SelectorRegistrationID`): an event still queued in a batch
/// for a socket closed earlier in that batch carries an id that is no longer the slot's, and is
/// dropped and counted (HAProxy counts such events too). The two reserved values have a high half
/// that no registration id takes.
enum RelayToken {
    static let wake = UInt64.max
    static let listenerTag: UInt64 = 0xFFFF_FFFE_0000_0000
    static let backendBit: UInt64 = 1 << 31
    /// The largest registration id; ids then wrap to 1.
    static let maximumRegistration: UInt32 = 0xFFFF_FFFD

    static func listener(_ index: Int) -> UInt64 { Self.listenerTag | UInt64(index) }

    static func connection(slot: Int, side: RelayMachine.Side, registration: UInt32) -> UInt64 {
        UInt64(registration) << 32 | (side == .backend ? Self.backendBit : 0) | UInt64(slot)
    }

    static func isListener(_ token: UInt64) -> Bool { token & Self.listenerTag == Self.listenerTag }
    static func slot(_ token: UInt64) -> Int { Int(token & (Self.backendBit - 1)) }
    static func side(_ token: UInt64) -> RelayMachine.Side { token & Self.backendBit != 0 ? .backend : .client }
    static func registration(_ token: UInt64) -> UInt32 { UInt32(truncatingIfNeeded: token >> 32) }
}
