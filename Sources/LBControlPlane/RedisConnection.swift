import CHiredis
import LBKit
import NIOCore

#if canImport(Glibc)
import Glibc
#endif

/// A blocking connection to Redis through hiredis, used only from the control plane's own thread
/// (and by `l4lb ctl`), never from a relay thread.
///
/// Commands go through `redisCommandArgv` (the variadic `redisCommand` cannot be called from Swift).
/// Waiting for pub/sub messages polls the socket instead of using a hiredis read timeout, because a
/// timed-out hiredis context cannot be used again. Any error leaves the connection unusable: the
/// caller drops it and reconnects.
public final class RedisConnection {
    public struct Failure: Error, CustomStringConvertible {
        public let description: String
    }

    private let context: UnsafeMutablePointer<redisContext>

    /// Connects, authenticates and selects the database, each bounded by `timeout`.
    public init(_ endpoint: RedisEndpoint, timeout: TimeAmount = .seconds(3)) throws(Failure) {
        let seconds = max(timeout.nanoseconds, 1_000_000)
        let timeval = timeval(tv_sec: Int(seconds / 1_000_000_000), tv_usec: Int(seconds % 1_000_000_000 / 1000))
        let context: UnsafeMutablePointer<redisContext>?
        switch endpoint.transport {
        case .tcp(let host, let port):
            context = redisConnectWithTimeout(host, Int32(port), timeval)
        case .unix(let path):
            context = redisConnectUnixWithTimeout(path, timeval)
        case .sentinel:
            throw Failure(description: "\(endpoint) names sentinels, not a server: use RedisConnection.open")
        }
        guard let context else { throw Failure(description: "cannot allocate a hiredis context") }
        guard context.pointee.err == 0 else {
            let message = Self.errorString(context)
            redisFree(context)
            throw Failure(description: "cannot connect to \(endpoint): \(message)")
        }
        self.context = context
        // Commands wait at most `timeout`; a reply later than that means a broken connection.
        redisSetTimeout(context, timeval)
        redisEnableKeepAlive(context)
        // hiredis opens its socket without close-on-exec: a process l4lb starts (a live upgrade)
        // must not inherit it.
        _ = fcntl(context.pointee.fd, F_SETFD, FD_CLOEXEC)
        if let password = endpoint.password {
            let arguments = endpoint.username.map { ["AUTH", $0, password] } ?? ["AUTH", password]
            if case .error(let message) = try self.command(arguments) {
                throw Failure(description: "Redis refused AUTH: \(message)")
            }
        }
        if endpoint.database != 0, case .error(let message) = try self.command(["SELECT", "\(endpoint.database)"]) {
            throw Failure(description: "Redis refused SELECT \(endpoint.database): \(message)")
        }
    }

    deinit {
        redisFree(self.context)
    }

    /// A connection to `endpoint`, or with a Sentinel URL to the master the sentinels name now (and
    /// that says it is master); the endpoint actually reached comes with it.
    public static func open(
        _ endpoint: RedisEndpoint,
        timeout: TimeAmount = .seconds(3)
    ) throws(Failure) -> (
        RedisConnection, RedisEndpoint
    ) {
        guard case .sentinel = endpoint.transport else {
            return (try RedisConnection(endpoint, timeout: timeout), endpoint)
        }
        return try SentinelClient.connectToMaster(endpoint, timeout: timeout)
    }

    /// Sends one command and waits for its reply. A Redis error reply is returned, not thrown;
    /// only connection failures throw.
    @discardableResult
    public func command(_ arguments: [String]) throws(Failure) -> RedisReply {
        let reply = Self.withArgv(arguments) { argc, argv, lengths in
            redisCommandArgv(self.context, argc, argv, lengths)
        }
        guard let reply else {
            throw Failure(description: "Redis connection lost: \(Self.errorString(self.context))")
        }
        defer { freeReplyObject(reply) }
        return Self.convert(reply.assumingMemoryBound(to: redisReply.self))
    }

    /// Sends a command without waiting for its reply (for SUBSCRIBE, whose replies arrive as messages).
    public func send(_ arguments: [String]) throws(Failure) {
        let status = Self.withArgv(arguments) { argc, argv, lengths in
            redisAppendCommandArgv(self.context, argc, argv, lengths)
        }
        guard status == REDIS_OK else {
            throw Failure(description: "Redis write failed: \(Self.errorString(self.context))")
        }
        var done: Int32 = 0
        while done == 0 {
            guard redisBufferWrite(self.context, &done) == REDIS_OK else {
                throw Failure(description: "Redis write failed: \(Self.errorString(self.context))")
            }
        }
    }

    /// The next reply pushed by the server (pub/sub messages), or nil if none arrived within
    /// `milliseconds`. Throws when the connection is lost.
    public func nextReply(waitingUpTo milliseconds: Int32) throws(Failure) -> RedisReply? {
        try self.nextReply(waitingUpTo: milliseconds, orUntilReadable: -1)
    }

    /// `nextReply(waitingUpTo:)` that also returns nil as soon as `other` (an eventfd that another
    /// thread signals) is readable.
    func nextReply(waitingUpTo milliseconds: Int32, orUntilReadable other: Int32) throws(Failure) -> RedisReply? {
        if let reply = try self.bufferedReply() { return reply }
        var descriptors = [
            pollfd(fd: self.context.pointee.fd, events: Int16(POLLIN), revents: 0),
            pollfd(fd: other, events: Int16(POLLIN), revents: 0),
        ]
        let ready = poll(&descriptors, other >= 0 ? 2 : 1, milliseconds)
        if ready == 0 || (ready < 0 && errno == EINTR) { return nil }
        guard ready > 0 else {
            throw Failure(description: "poll on the Redis socket failed: \(String(cString: strerror(errno)))")
        }
        guard descriptors[0].revents != 0 else { return nil }
        guard redisBufferRead(self.context) == REDIS_OK else {
            throw Failure(description: "Redis connection lost: \(Self.errorString(self.context))")
        }
        return try self.bufferedReply()
    }

    private func bufferedReply() throws(Failure) -> RedisReply? {
        var reply: UnsafeMutableRawPointer?
        guard redisGetReplyFromReader(self.context, &reply) == REDIS_OK else {
            throw Failure(description: "Redis protocol error: \(Self.errorString(self.context))")
        }
        guard let reply else { return nil }
        defer { freeReplyObject(reply) }
        return Self.convert(reply.assumingMemoryBound(to: redisReply.self))
    }

    private static func convert(_ reply: UnsafeMutablePointer<redisReply>) -> RedisReply {
        let value = reply.pointee
        func text() -> String {
            guard let pointer = value.str else { return "" }
            return String(decoding: UnsafeRawBufferPointer(start: pointer, count: Int(value.len)), as: UTF8.self)
        }
        switch value.type {
        case REDIS_REPLY_STRING: return .string(text())
        case REDIS_REPLY_STATUS: return .status(text())
        case REDIS_REPLY_ERROR: return .error(text())
        case REDIS_REPLY_INTEGER: return .integer(Int(value.integer))
        case REDIS_REPLY_ARRAY:
            return .array((0..<Int(value.elements)).compactMap { index in value.element[index].map(convert) })
        default: return .null
        }
    }

    private static func errorString(_ context: UnsafeMutablePointer<redisContext>) -> String {
        withUnsafeBytes(of: context.pointee.errstr) { raw in
            String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
        }
    }

    /// Calls `body` with C copies of `arguments` (pointer + length each, so any byte may pass).
    private static func withArgv<Result>(
        _ arguments: [String],
        _ body: (Int32, UnsafeMutablePointer<UnsafePointer<CChar>?>, UnsafePointer<Int>) -> Result
    ) -> Result {
        let copies = arguments.map { argument -> UnsafeMutableBufferPointer<CChar> in
            let bytes = Array(argument.utf8)
            let buffer = UnsafeMutableBufferPointer<CChar>.allocate(capacity: max(bytes.count, 1))
            for (index, byte) in bytes.enumerated() { buffer[index] = CChar(bitPattern: byte) }
            return buffer
        }
        defer { for copy in copies { copy.deallocate() } }
        var pointers = copies.map { UnsafePointer<CChar>?(UnsafePointer($0.baseAddress!)) }
        let lengths = arguments.map { $0.utf8.count }
        return pointers.withUnsafeMutableBufferPointer { argv in
            lengths.withUnsafeBufferPointer { lengths in
                body(Int32(arguments.count), argv.baseAddress!, lengths.baseAddress!)
            }
        }
    }
}
