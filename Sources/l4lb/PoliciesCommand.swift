import ArgumentParser
import Policies

/// `l4lb policies`: the names `--policy` accepts.
struct PoliciesCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "policies",
        abstract: "List the policies --policy accepts."
    )

    func run() {
        for name in BuiltinPolicies.makeRegistry().names {
            print(name)
        }
    }
}
