/// `--relay-slice`: the time slice each relay thread asks of the kernel's fair scheduler.
///
/// Why a proxy asks for one: a relay thread's turn of the loop is short (tens of microseconds), but
/// when two busy threads share a core, EEVDF lets the running one keep it for a whole slice (1.4 ms
/// by default on two CPUs) before the other runs. Two relay threads the scheduler had put on one core
/// waited up to 5 ms for each other, and keep-alive p99 doubled. A shorter slice gives the same CPU
/// share in shorter turns, and lets a woken relay thread preempt sooner (Linux 6.12 and later; earlier
/// kernels ignore it). Measured in docs/performance.md.
public struct SchedulerSlice: Hashable, Sendable, CustomStringConvertible {
    public let nanoseconds: UInt64

    /// What the kernel takes: it clamps a custom slice to 0.1-100 ms.
    public static let allowed: ClosedRange<UInt64> = 100_000...100_000_000
    /// l4lb's default: a few relay turns long, under a quarter of the kernel's default slice.
    public static let standard = SchedulerSlice(nanoseconds: 300_000)

    public init(nanoseconds: UInt64) {
        self.nanoseconds = nanoseconds
    }

    /// Parses a duration (`300us`, `1ms`); `0` means the kernel's default slice, returned as nil.
    public static func parse(_ text: String, flag: String = "--relay-slice") throws(L4LBError) -> SchedulerSlice? {
        let amount = try DurationParser.parse(text, flag: flag).nanoseconds
        if amount == 0 { return nil }
        guard amount > 0, Self.allowed.contains(UInt64(amount)) else {
            throw L4LBError(
                .invalidValue,
                "\(flag): '\(text)' is out of range (0 for the kernel's default, or 100us-100ms)"
            )
        }
        return SchedulerSlice(nanoseconds: UInt64(amount))
    }

    public var description: String {
        self.nanoseconds % 1_000_000 == 0 ? "\(self.nanoseconds / 1_000_000)ms" : "\(self.nanoseconds / 1_000)us"
    }
}
