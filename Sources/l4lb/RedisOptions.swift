import ArgumentParser
import Foundation
import LBControlPlane
import LBKit

/// `--redis` and `--redis-prefix`, shared by `l4lb run` and `l4lb ctl`.
struct RedisOptions: ParsableArguments {
    @Option(help: "Control plane: redis://[:password@]host[:port][/db] or unix:///path/to/redis.sock.")
    var redis: String?

    @Option(help: "Put every key and channel under this prefix (PREFIX:serverPool, PREFIX:addServer, ...).")
    var redisPrefix: String?

    @Option(
        help: ArgumentHelp(
            "Read the Redis password from this file (its first line), so that it never shows in ps.",
            valueName: "file"
        )
    )
    var redisPasswordFile: String?

    @Option(
        help: ArgumentHelp(
            "Read the Redis password from this environment variable, so that it never shows in ps.",
            valueName: "name"
        )
    )
    var redisPasswordEnv: String?

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
        var endpoint = try RedisEndpoint(parsing: redis)
        if let password = try self.password() {
            if endpoint.username == nil, let name = endpoint.password, !name.isEmpty {
                // redis://NAME@host with the password given apart: NAME is the ACL user.
                endpoint.username = name
            } else if let inline = endpoint.password, !inline.isEmpty {
                throw L4LBError(.invalidValue, "--redis has a password and --redis-password-file/-env gives another")
            }
            endpoint.password = password
        }
        return ControlPlaneConfiguration(endpoint: endpoint, names: RedisNames(prefix: self.redisPrefix))
    }

    /// The password from `--redis-password-file` or `--redis-password-env`, if one is given.
    private func password() throws(L4LBError) -> String? {
        switch (self.redisPasswordFile, self.redisPasswordEnv) {
        case (nil, nil):
            return nil
        case (.some, .some):
            throw L4LBError(.invalidValue, "give --redis-password-file or --redis-password-env, not both")
        case (let path?, nil):
            guard let data = FileManager.default.contents(atPath: path) else {
                throw L4LBError(.invalidValue, "--redis-password-file: cannot read \(path)")
            }
            let text = String(decoding: data, as: UTF8.self)
            let line = text.split(separator: "\n", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
            let password = line.hasSuffix("\r") ? String(line.dropLast()) : String(line)
            guard !password.isEmpty else { throw L4LBError(.invalidValue, "--redis-password-file: \(path) is empty") }
            return password
        case (nil, let name?):
            guard let password = ProcessInfo.processInfo.environment[name], !password.isEmpty else {
                throw L4LBError(.invalidValue, "--redis-password-env: \(name) is not set")
            }
            return password
        }
    }
}
