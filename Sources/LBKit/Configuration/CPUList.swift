/// The CPUs the relay threads are pinned to (`--relay-cpus 0-3,6`): relay thread N runs on the Nth
/// CPU of the list, wrapping round when there are more threads than CPUs, as HAProxy's
/// `cpu-map auto:1/1-4 0-3` and nginx's `worker_cpu_affinity` do. Written as the kernel writes
/// `Cpus_allowed_list`: numbers and ranges, comma-separated, each CPU once.
public struct CPUList: Hashable, Sendable, CustomStringConvertible {
    /// In the order given: the order decides which thread gets which CPU.
    public let cpus: [Int]

    /// Linux's CPU_SETSIZE: the highest CPU number sched_setaffinity takes through a cpu_set_t is 1023.
    public static let limit = 1024

    public init(cpus: [Int]) {
        self.cpus = cpus
    }

    public init(parsing text: String, flag: String = "--relay-cpus") throws(L4LBError) {
        func refuse(_ why: String) -> L4LBError {
            L4LBError(.invalidValue, "\(flag): '\(text)' \(why) (CPU numbers and ranges, e.g. 0-3 or 2,3)")
        }
        func number(_ part: Substring) throws(L4LBError) -> Int {
            guard !part.isEmpty, part.utf8.count <= 4, part.utf8.allSatisfy({ $0 >= 48 && $0 <= 57 }),
                let value = Int(part), value < Self.limit
            else {
                throw refuse("has '\(part)', not a CPU number in 0-\(Self.limit - 1)")
            }
            return value
        }
        var cpus: [Int] = []
        var seen = Set<Int>()
        for item in text.split(separator: ",", omittingEmptySubsequences: false) {
            let ends = item.split(separator: "-", maxSplits: 1, omittingEmptySubsequences: false)
            let first = try number(ends[0])
            let last = ends.count == 2 ? try number(ends[1]) : first
            guard first <= last else { throw refuse("has the range '\(item)', which runs backwards") }
            for cpu in first...last {
                guard seen.insert(cpu).inserted else { throw refuse("names CPU \(cpu) twice") }
                cpus.append(cpu)
            }
        }
        self.cpus = cpus
    }

    /// The CPU relay thread `thread` (from 0) is pinned to.
    public func cpu(forThread thread: Int) -> Int {
        self.cpus[thread % self.cpus.count]
    }

    /// The CPUs not in `allowed`, in this list's order.
    public func missing(from allowed: CPUList) -> [Int] {
        let allowedSet = Set(allowed.cpus)
        return self.cpus.filter { !allowedSet.contains($0) }
    }

    /// Ranges where the numbers run on by one: "0-3,6".
    public var description: String {
        var parts: [String] = []
        var index = 0
        while index < self.cpus.count {
            var end = index
            while end + 1 < self.cpus.count, self.cpus[end + 1] == self.cpus[end] + 1 { end += 1 }
            parts.append(end == index ? "\(self.cpus[index])" : "\(self.cpus[index])-\(self.cpus[end])")
            index = end + 1
        }
        return parts.joined(separator: ",")
    }
}
