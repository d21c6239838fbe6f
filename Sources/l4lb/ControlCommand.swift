import ArgumentParser
import Foundation
import LBControlPlane
import LBKit

#if canImport(Glibc)
import Glibc
#endif

/// `l4lb ctl`: the control messages without typing Redis commands. Each message is checked here
/// with the same decoder l4lb uses, so a typo is caught before it is published.
struct ControlCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ctl",
        abstract: "Manage running l4lb instances through Redis.",
        subcommands: [
            AddServer.self, RemoveServer.self, SetPolicy.self, ShowPool.self, ReloadPool.self, Instances.self,
            Upgrade.self, ExplainCommand.self, SetShadowPolicy.self, ClearShadowPolicy.self, ShadowCommand.self,
        ]
    )

    struct AddServer: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "add-server",
            abstract: "Add a backend to the pool: HOST:PORT[,weight=N][,region=R] or a JSON object."
        )
        @Argument var backend: String
        @OptionGroup var redis: RedisOptions

        func run() throws { try publish(.addServer, self.backend, self.redis) }
    }

    struct RemoveServer: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "remove-server",
            abstract: "Remove a backend from the pool; its open connections finish."
        )
        @Argument var backend: String
        @OptionGroup var redis: RedisOptions

        func run() throws { try publish(.removeServer, self.backend, self.redis) }
    }

    struct SetPolicy: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "set-policy",
            abstract: "Switch the policy for new clients: NAME, optionally followed by a JSON object."
        )
        @Argument var policy: String
        @OptionGroup var redis: RedisOptions

        func run() throws { try publish(.setPolicy, self.policy, self.redis) }
    }

    struct ReloadPool: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "reload-pool",
            abstract: "Make every instance read serverPool again (after writing it directly with SET)."
        )
        @OptionGroup var redis: RedisOptions

        func run() throws { try publish(.reloadPool, "", self.redis) }
    }

    struct Instances: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "instances",
            abstract: "List the live instances, and mark each one whose pool differs from serverPool."
        )
        @OptionGroup var redis: RedisOptions

        func run() throws {
            let (connection, names) = try connect(self.redis)
            do {
                let fleet = try FleetStatus.read(connection, names: names)
                print(fleet.report(now: Date()), terminator: "")
            } catch {
                throw exitWithOperatorError(error.description)
            }
        }
    }

    struct Upgrade: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "upgrade",
            abstract: "Upgrade a running l4lb to the binary now at its path, refusing no client (SIGUSR2)."
        )
        @Option(help: "The running l4lb's --pid-file.") var pidFile: String
        @Option(
            parsing: .unconditional,
            help: ArgumentHelp("How long to wait for the new process.", valueName: "duration")
        )
        var timeout = DurationFlag("60s")

        func run() throws {
            func pid() -> Int32? {
                (try? String(contentsOfFile: self.pidFile, encoding: .utf8)).flatMap {
                    Int32($0.trimmingCharacters(in: .whitespacesAndNewlines))
                }
            }
            guard let old = pid(), old > 0 else {
                throw exitWithOperatorError("--pid-file \(self.pidFile): no pid in it")
            }
            guard kill(old, SIGUSR2) == 0 else {
                throw exitWithOperatorError("cannot signal pid \(old): \(String(cString: strerror(errno)))")
            }
            // The pid file names the new process once it serves (the old one drains, then exits).
            let deadline = Date().addingTimeInterval(Double(self.timeout.amount.nanoseconds) / 1e9)
            while Date() < deadline {
                if let now = pid(), now != old {
                    print("upgraded: pid \(old) -> \(now); \(old) drains its connections and exits")
                    return
                }
                guard kill(old, 0) == 0 else { break }
                usleep(50_000)
            }
            throw exitWithOperatorError("pid \(old) did not hand over within \(self.timeout.text): see its log for why")
        }
    }

    struct ShowPool: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "pool",
            abstract: "Print the pool and the policy that l4lb instances are using."
        )
        @OptionGroup var redis: RedisOptions

        func run() throws {
            let (connection, names) = try connect(self.redis)
            do {
                let policy = try connection.command(["GET", names.policyKey]).text ?? "(not set)"
                let pool = try connection.command(["GET", names.serverPoolKey]).text
                print("policy: \(policy)")
                guard let pool else {
                    print("pool: (not set)")
                    return
                }
                do {
                    let specs = try PoolDocument.decode(pool)
                    print("pool: \(specs.count) backend\(specs.count == 1 ? "" : "s")")
                    for spec in specs { print("  \(spec)") }
                } catch {
                    print("pool: \(pool)")
                    throw exitWithOperatorError("\(names.serverPoolKey) is not valid: \(error.message)")
                }
            } catch let error as RedisConnection.Failure {
                throw exitWithOperatorError(error.description)
            }
        }
    }
}

func connect(_ options: RedisOptions) throws -> (RedisConnection, RedisNames) {
    var options = options
    if options.redis == nil { options.redis = "redis://127.0.0.1:6379" }
    do {
        guard let configuration = try options.makeConfiguration() else {
            preconditionFailure("--redis has a default here")
        }
        return (
            try RedisConnection.open(configuration.endpoint, timeout: configuration.commandTimeout).0,
            configuration.names
        )
    } catch let error as L4LBError {
        throw exitWithOperatorError(error.message)
    } catch {
        throw exitWithOperatorError("\(error)")
    }
}

func publish(_ channel: ControlChannel, _ payload: String, _ options: RedisOptions) throws {
    do {
        _ = try ControlMessage(channel: channel, payload: payload)
    } catch {
        throw exitWithOperatorError("\(channel.rawValue): \(error.message)")
    }
    let (connection, names) = try connect(options)
    do {
        let reply = try connection.command(["PUBLISH", names.channel(channel), payload])
        guard case .integer(let receivers) = reply else {
            throw exitWithOperatorError("Redis refused PUBLISH: \(reply)")
        }
        print(
            "published to \(names.channel(channel)); \(receivers) l4lb instance\(receivers == 1 ? "" : "s") listening"
        )
    } catch let error as RedisConnection.Failure {
        throw exitWithOperatorError(error.description)
    }
}
