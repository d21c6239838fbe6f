import ArgumentParser
import Foundation
import LBControlPlane
import LBKit

/// `l4lb ctl explain IP`: asks every live instance (or one) through Redis which backend its policy
/// would pick for that client now, and why. The request goes out on the `explain` channel; each
/// instance that takes it pushes its answer onto the list `explain:<id>`, which this command pops.
struct ExplainCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "explain",
        abstract: "Which backend each instance would pick for a client now, and why."
    )
    @Argument(help: "The client's IP address.") var client: String
    @Option(help: "The client's port (policies that hash it use it).") var port: Int = 0
    @Option(help: "Ask only this instance (its --instance-id).") var instance: String?
    @Flag(help: "Print each answer as one JSON object per line.") var json = false
    @OptionGroup var redis: RedisOptions

    /// How long to wait for each answer: an instance answers from its control thread, at once unless
    /// it is applying a large burst.
    static let answerWaitSeconds = 2

    func run() throws {
        guard let port = UInt16(exactly: self.port), let address = ClientAddress(text: self.client, port: port) else {
            throw exitWithOperatorError(
                "explain: '\(self.client.prefix(64))' port \(self.port) is not an IP address and port"
            )
        }
        let request = ExplainRequest(id: UUID().uuidString.lowercased(), client: address, instance: self.instance)
        let (connection, names) = try connect(self.redis)
        do {
            let reply = try connection.command(["PUBLISH", names.channel(.explain), request.json])
            guard case .integer(let listening) = reply, listening > 0 else {
                throw exitWithOperatorError("no l4lb instance is listening on \(names.channel(.explain))")
            }
            let expected = self.instance == nil ? listening : 1
            var answers: [ExplainAnswer] = []
            for _ in 0..<expected {
                let popped = try connection.command([
                    "BLPOP", names.explainReplyKey(id: request.id), "\(Self.answerWaitSeconds)",
                ])
                guard case .array(let parts) = popped, parts.count == 2, let text = parts[1].text else { break }
                guard let answer = try? JSONDecoder().decode(ExplainAnswer.self, from: Data(text.utf8)) else {
                    continue
                }
                answers.append(answer)
            }
            _ = try? connection.command(["DEL", names.explainReplyKey(id: request.id)])
            for answer in answers.sorted(by: { ($0.instance ?? "") < ($1.instance ?? "") }) {
                print(self.json ? JSONText.encode(answer) : Self.text(answer))
            }
            if let instance = self.instance, answers.isEmpty {
                throw exitWithOperatorError("instance \(instance) did not answer within \(Self.answerWaitSeconds) s")
            }
            if answers.count < expected {
                FileHandle.standardError.write(
                    Data("l4lb: \(answers.count) of \(expected) listening instances answered\n".utf8)
                )
            }
        } catch let error as RedisConnection.Failure {
            throw exitWithOperatorError(error.description)
        }
    }

    /// `lb-1  round-robin  -> 10.0.0.7:80` then the chain, then the shadow's.
    static func text(_ answer: ExplainAnswer) -> String {
        var lines = ["\(answer.instance ?? "?"): \(answer.policy) -> \(answer.backend ?? "no backend")"]
        lines.append("  \(answer.chain)")
        if let shadow = answer.shadow {
            lines.append(
                "  shadow \(shadow.policy) -> \(shadow.backend ?? "no backend"): \(shadow.steps.joined(separator: " -> "))"
            )
        }
        return lines.joined(separator: "\n")
    }
}
