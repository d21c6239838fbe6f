import Foundation

/// What the kernel says of a thread's scheduling, read from /proc: its EEVDF slice and nice value.
enum SchedulerFacts {
    /// Linux 6.12 or later (custom slices through sched_setattr), and /proc showing `se.slice`.
    static let takesCustomSlices: Bool = {
        var name = utsname()
        uname(&name)
        let release = withUnsafeBytes(of: &name.release) {
            String(decoding: $0.prefix(while: { $0 != 0 }), as: UTF8.self)
        }
        let parts = release.split(whereSeparator: { !$0.isNumber }).prefix(2).compactMap { Int($0) }
        guard parts.count == 2, (parts[0], parts[1]) >= (6, 12) else { return false }
        return slice(pid: getpid(), task: getpid()) != nil
    }()

    /// The `se.slice` line of /proc/PID/task/TID/sched, in nanoseconds as written there.
    static func slice(pid: Int32, task: Int32) -> String? {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/task/\(task)/sched", encoding: .utf8),
            let line = text.split(separator: "\n").first(where: { $0.hasPrefix("se.slice") }),
            let value = line.split(separator: ":").last
        else { return nil }
        return value.trimmingCharacters(in: .whitespaces)
    }

    /// Each relay thread's name, with its slice and nice value: "300000 nice 5".
    static func relayThreads(of pid: Int32) -> [String: String] {
        let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task")) ?? []
        var found: [String: String] = [:]
        for task in tasks {
            guard let tid = Int32(task),
                let name = (try? String(contentsOfFile: "/proc/\(pid)/task/\(task)/comm", encoding: .utf8))?
                    .trimmingCharacters(in: .whitespacesAndNewlines), name.hasPrefix("l4lb-relay"),
                let slice = Self.slice(pid: pid, task: tid),
                let stat = try? String(contentsOfFile: "/proc/\(pid)/task/\(task)/stat", encoding: .utf8),
                // Fields after the command's closing parenthesis: state is the first, nice the 17th.
                let fields = stat.split(separator: ")").last?.split(separator: " "), fields.count > 16
            else { continue }
            found[name] = "\(slice) nice \(fields[16])"
        }
        return found
    }
}
