import ArgumentParser
import LBKit

/// `--redis` and `--redis-prefix`, shared by `l4lb run` and `l4lb ctl`.
struct RedisOptions: ParsableArguments {
    @Option(help: "Control plane: redis://[:password@]host[:port][/db] or unix:///path/to/redis.sock.")
    var redis: String?

    @Option(help: "Put every key and channel under this prefix (PREFIX:serverPool, PREFIX:addServer, ...).")
    var redisPrefix: String?

    /// The control plane's configuration, or nil when `--redis` was not given.
    func makeConfiguration() throws(L4LBError) -> ControlPlaneConfiguration? {
        guard let redis else {
            if self.redisPrefix != nil {
                throw L4LBError(.invalidValue, "--redis-prefix needs --redis")
            }
            return nil
        }
        if let prefix = self.redisPrefix, prefix.isEmpty || prefix.contains(where: { $0 == " " || $0 == "\n" }) {
            throw L4LBError(.invalidValue, "--redis-prefix must be a non-empty word without spaces")
        }
        return ControlPlaneConfiguration(
            endpoint: try RedisEndpoint(parsing: redis),
            names: RedisNames(prefix: self.redisPrefix)
        )
    }
}
