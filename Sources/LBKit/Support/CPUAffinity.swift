import CLinux

/// The kernel's side of `--relay-cpus`: which CPUs this process may use, and pinning a thread to one.
public enum CPUAffinity {
    /// The CPUs this process may run on now (a container or `taskset` may allow fewer than the
    /// machine has); nil if the kernel would not say.
    public static func allowed() -> CPUList? {
        var cpus = [Int32](repeating: 0, count: CPUList.limit)
        let count = Int(l4lb_allowed_cpus(&cpus, Int32(cpus.count)))
        guard count > 0 else { return nil }
        return CPUList(cpus: cpus.prefix(count).map(Int.init))
    }

    /// Pins the calling thread to `cpu`; nil, or why the kernel refused.
    static func pinCurrentThread(to cpu: Int) -> String? {
        let code = l4lb_pin_current_thread(Int32(cpu))
        return code == 0 ? nil : SocketCalls.describe(code)
    }
}
