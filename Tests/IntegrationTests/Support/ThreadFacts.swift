import Foundation

/// What the kernel says of a process's threads, read from /proc/PID/task: their names, the CPUs
/// they may run on, their EEVDF slice and nice value.
enum ThreadFacts {
    /// Linux 6.12 or later (custom slices through sched_setattr), and /proc showing `se.slice`.
    static let takesCustomSlices: Bool = {
        var name = utsname()
        uname(&name)
        let release = withUnsafeBytes(of: &name.release) {
            String(decoding: $0.prefix(while: { $0 != 0 }), as: UTF8.self)
        }
        let parts = release.split(whereSeparator: { !$0.isNumber }).prefix(2).compactMap { Int($0) }
        guard parts.count == 2, (parts[0], parts[1]) >= (6, 12) else { return false }
        return slice(pid: getpid(), task: "\(getpid())") != nil
    }()

    /// Each thread's id (a /proc/PID/task entry) and name.
    static func threads(of pid: Int32) -> [(task: String, name: String)] {
        let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task")) ?? []
        return tasks.compactMap { task in
            (try? String(contentsOfFile: "/proc/\(pid)/task/\(task)/comm", encoding: .utf8))
                .map { (task, $0.trimmingCharacters(in: .whitespacesAndNewlines)) }
        }
    }

    /// `fact` of each relay thread, by the thread's name; a thread whose fact cannot be read is left out.
    static func relayThreads(of pid: Int32, _ fact: (_ pid: Int32, _ task: String) -> String?) -> [String: String] {
        var found: [String: String] = [:]
        for (task, name) in Self.threads(of: pid) where name.hasPrefix("l4lb-relay") {
            found[name] = fact(pid, task)
        }
        return found
    }

    /// The CPUs the kernel lets a thread run on (`Cpus_allowed_list`).
    static func allowedCPUs(pid: Int32, task: String) -> String? {
        guard let status = try? String(contentsOfFile: "/proc/\(pid)/task/\(task)/status", encoding: .utf8),
            let line = status.split(separator: "\n").first(where: { $0.hasPrefix("Cpus_allowed_list:") })
        else { return nil }
        return line.dropFirst("Cpus_allowed_list:".count).trimmingCharacters(in: .whitespaces)
    }

    /// The `se.slice` line of /proc/PID/task/TID/sched, in nanoseconds as written there.
    static func slice(pid: Int32, task: String) -> String? {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/task/\(task)/sched", encoding: .utf8),
            let line = text.split(separator: "\n").first(where: { $0.hasPrefix("se.slice") }),
            let value = line.split(separator: ":").last
        else { return nil }
        return value.trimmingCharacters(in: .whitespaces)
    }

    /// A thread's slice and nice value: "300000 nice 5".
    static func sliceAndNice(pid: Int32, task: String) -> String? {
        guard let slice = Self.slice(pid: pid, task: task),
            let stat = try? String(contentsOfFile: "/proc/\(pid)/task/\(task)/stat", encoding: .utf8),
            // Fields after the command's closing parenthesis: state is the first, nice the 17th.
            let fields = stat.split(separator: ")").last?.split(separator: " "), fields.count > 16
        else { return nil }
        return "\(slice) nice \(fields[16])"
    }
}
