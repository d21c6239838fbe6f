import ArgumentParser
import Foundation
import LBControlPlane
import LBKit

/// `l4lb ctl set-shadow-policy`, `clear-shadow-policy` and `shadow`: try a policy on live traffic
/// before switching to it.
struct SetShadowPolicy: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "set-shadow-policy",
        abstract: "Ask a second policy about every client beside the active one, without obeying it."
    )
    @Argument var policy: String
    @OptionGroup var redis: RedisOptions

    func run() throws { try publish(.setShadowPolicy, self.policy, self.redis) }
}

struct ClearShadowPolicy: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "clear-shadow-policy",
        abstract: "Remove the shadow policy."
    )
    @OptionGroup var redis: RedisOptions

    func run() throws { try publish(.clearShadowPolicy, "", self.redis) }
}

struct ShadowCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "shadow",
        abstract: "What the shadow policy would have done, summed over the live instances: by region and backend."
    )
    @OptionGroup var redis: RedisOptions

    func run() throws {
        let (connection, names) = try connect(self.redis)
        do {
            let fleet = try FleetStatus.read(connection, names: names)
            print(ShadowFleetReport(instances: fleet.instances).text, terminator: "")
        } catch {
            throw exitWithOperatorError(error.description)
        }
    }
}
