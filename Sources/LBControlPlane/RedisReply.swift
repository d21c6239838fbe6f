/// One reply from Redis, copied out of hiredis's reply object so that nothing of hiredis's memory
/// outlives the call that read it.
public enum RedisReply: Hashable, Sendable {
    case string(String)
    case status(String)
    case error(String)
    case integer(Int)
    case array([RedisReply])
    case null

    /// The text of a bulk string or status reply.
    public var text: String? {
        switch self {
        case .string(let text), .status(let text): return text
        default: return nil
        }
    }
}
