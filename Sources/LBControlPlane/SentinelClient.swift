import LBKit
import NIOCore

/// Finds the Redis master through Redis Sentinel, as Sentinel's client guidelines describe: ask
/// each sentinel in turn for the master's address (`SENTINEL get-master-addr-by-name`), connect to
/// it, and trust it only if it says it is a master (`ROLE`): right after a failover a sentinel may
/// still name the old master, which, once back, is a replica.
enum SentinelClient {
    /// A connection to the master, and the master's endpoint (the sentinels replaced by its address).
    static func connectToMaster(
        _ endpoint: RedisEndpoint,
        timeout: TimeAmount
    ) throws(RedisConnection.Failure) -> (RedisConnection, RedisEndpoint) {
        guard case .sentinel(let sentinels, let master) = endpoint.transport else {
            return (try RedisConnection(endpoint, timeout: timeout), endpoint)
        }
        var reasons: [String] = []
        for sentinel in sentinels {
            do throws(RedisConnection.Failure) {
                let address = try Self.masterAddress(
                    asking: sentinel,
                    for: master,
                    endpoint: endpoint,
                    timeout: timeout
                )
                let target = endpoint.master(at: address)
                let connection = try RedisConnection(target, timeout: timeout)
                guard case .array(let role) = try connection.command(["ROLE"]), role.first?.text == "master" else {
                    reasons.append("\(sentinel) named \(address), which is not a master")
                    continue
                }
                return (connection, target)
            } catch {
                reasons.append("\(sentinel): \(error.description)")
            }
        }
        throw RedisConnection.Failure(
            description: "no sentinel named a reachable master '\(master)': \(reasons.joined(separator: "; "))"
        )
    }

    /// Asks one sentinel where master `name` is.
    static func masterAddress(
        asking sentinel: HostAndPort,
        for name: String,
        endpoint: RedisEndpoint,
        timeout: TimeAmount
    ) throws(RedisConnection.Failure) -> HostAndPort {
        let connection = try Self.connect(to: sentinel, endpoint: endpoint, timeout: timeout)
        let reply = try connection.command(["SENTINEL", "get-master-addr-by-name", name])
        guard case .array(let parts) = reply, parts.count == 2, let host = parts[0].text,
            let portText = parts[1].text, let port = Int(portText), (1...65_535).contains(port)
        else {
            throw RedisConnection.Failure(description: "does not know master '\(name)' (\(reply))")
        }
        return HostAndPort(host: host, port: port)
    }

    /// A connection to one sentinel, with the endpoint's credentials when the sentinel asks for a
    /// password and without them when it has none (sentinels often run without).
    static func connect(
        to sentinel: HostAndPort,
        endpoint: RedisEndpoint,
        timeout: TimeAmount
    ) throws(RedisConnection.Failure) -> RedisConnection {
        let plain = RedisEndpoint(transport: .tcp(host: sentinel.host, port: sentinel.port))
        guard endpoint.password != nil else { return try RedisConnection(plain, timeout: timeout) }
        var withPassword = plain
        withPassword.username = endpoint.username
        withPassword.password = endpoint.password
        do throws(RedisConnection.Failure) {
            return try RedisConnection(withPassword, timeout: timeout)
        } catch  where error.description.contains("without any password configured") {
            return try RedisConnection(plain, timeout: timeout)
        }
    }
}
