import ArgumentParser
import LBKit
import NIOCore

/// A duration flag's value (`250ms`, `3s`, `1.5s`, `2m`, `1h`, or a bare number of seconds),
/// checked by ArgumentParser as it reads the command line: a bad value is refused there, with the
/// flag's name, before any setting is built.
struct DurationFlag: ExpressibleByArgument, Equatable, Sendable {
    let amount: TimeAmount
    /// As the operator wrote it, for help and errors.
    let text: String

    init?(argument: String) {
        guard let amount = try? DurationParser.parse(argument, flag: "") else { return nil }
        self.amount = amount
        self.text = argument
    }

    /// A default written in the source; a typo there is a programming error caught by any test run.
    init(_ literal: String) {
        self.init(argument: literal)!
    }

    var defaultValueDescription: String { self.text }

    static var defaultCompletionKind: CompletionKind { .default }
}
