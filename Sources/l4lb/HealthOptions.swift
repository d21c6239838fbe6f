import ArgumentParser
import LBKit
import NIOCore

/// The flags that decide when a backend is retired and when it is back.
struct HealthOptions: ParsableArguments {
    @Option(
        parsing: .unconditional,
        help: "Consecutive connect timeouts or resets that retire a backend (a refused connect retires at once)."
    )
    var retireAfter: Int = 3

    @Option(parsing: .unconditional, help: "Consecutive successful probes that bring a retired backend back.")
    var rise: Int = 2

    @Option(parsing: .unconditional, help: "Consecutive failed active checks that retire a healthy backend.")
    var fall: Int = 3

    @Option(
        parsing: .unconditional,
        help: ArgumentHelp(
            "First wait before probing a retired backend; doubles on each failure.",
            valueName: "duration"
        )
    )
    var probeInterval = DurationFlag("1s")

    @Option(
        parsing: .unconditional,
        help: ArgumentHelp("Longest wait between probes of a retired backend.", valueName: "duration")
    )
    var probeMaxInterval = DurationFlag("30s")

    @Option(
        parsing: .unconditional,
        help: ArgumentHelp("Check healthy backends this often too; 0 = only probe retired ones.", valueName: "duration")
    )
    var healthCheckInterval = DurationFlag("0")

    @Option(help: "Text a probe sends once connected (\\r and \\n escapes allowed).")
    var healthCheckSend: String?

    @Option(help: "Text the probe's reply must contain.")
    var healthCheckExpect: String?

    func makeSettings(probeTimeout: TimeAmount) throws(L4LBError) -> HealthSettings {
        for (name, value) in [("--retire-after", self.retireAfter), ("--rise", self.rise), ("--fall", self.fall)] {
            guard (1...100).contains(value) else { throw L4LBError(.invalidValue, "\(name) must be in 1-100") }
        }
        let probeInterval = self.probeInterval.amount
        let probeMaxInterval = self.probeMaxInterval.amount
        let checkInterval = self.healthCheckInterval.amount
        guard probeInterval > .zero else { throw L4LBError(.invalidDuration, "--probe-interval must be more than 0") }
        guard probeMaxInterval >= probeInterval else {
            throw L4LBError(.invalidDuration, "--probe-max-interval must be at least --probe-interval")
        }
        return HealthSettings(
            retireAfter: self.retireAfter,
            rise: self.rise,
            fall: self.fall,
            probeInterval: probeInterval,
            probeMaximumInterval: probeMaxInterval,
            checkInterval: checkInterval == .zero ? nil : checkInterval,
            probeTimeout: probeTimeout,
            probeSend: self.healthCheckSend.map(Self.unescape),
            probeExpect: self.healthCheckExpect.map(Self.unescape)
        )
    }

    private static func unescape(_ text: String) -> String {
        text.replacingOccurrences(of: "\\r", with: "\r").replacingOccurrences(of: "\\n", with: "\n")
    }
}
