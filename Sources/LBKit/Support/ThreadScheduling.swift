import CLinux

/// How the kernel schedules a relay thread (`--relay-cpus`, `--relay-slice`): which CPUs this
/// process may use, pinning a thread to one, its nice value and its scheduler slice.
public enum ThreadScheduling {
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

    /// Gives the calling thread the process's nice value; nil, or why the kernel refused.
    static func takeProcessNice() -> String? {
        let code = l4lb_take_process_nice()
        return code == 0 ? nil : SocketCalls.describe(code)
    }

    /// Asks the fair scheduler for `slice` for the calling thread; nil, or why the kernel refused.
    static func setCurrentThreadSlice(_ slice: SchedulerSlice) -> String? {
        let code = l4lb_set_current_thread_slice(slice.nanoseconds)
        return code == 0 ? nil : SocketCalls.describe(code)
    }
}
