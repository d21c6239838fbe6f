import Foundation

/// The system calls a systemd unit's `SystemCallFilter=` lines allow, worked out as systemd does:
/// the first line is an allow list (this reader takes no other kind), each later line adds its
/// calls, or with `~` takes them away; `@group`s are expanded with `systemd-analyze syscall-filter`.
struct UnitSystemCallFilter {
    let allowed: Set<String>

    init(unit: String) throws {
        let lines = unit.split(separator: "\n").filter { $0.hasPrefix("SystemCallFilter=") }
            .map { $0.dropFirst("SystemCallFilter=".count) }
        guard let first = lines.first, !first.hasPrefix("~") else {
            throw TestFailure("the unit's first SystemCallFilter= is not an allow list: \(lines)")
        }
        var allowed = Set<String>()
        var groups: [String: Set<String>] = [:]
        for line in lines {
            let removes = line.hasPrefix("~")
            for item in line.drop(while: { $0 == "~" }).split(separator: " ") {
                let names = try Self.expand(String(item), groups: &groups)
                if removes { allowed.subtract(names) } else { allowed.formUnion(names) }
            }
        }
        self.allowed = allowed
    }

    /// A system call's name as itself; a group as every call in it, nested groups included.
    private static func expand(
        _ item: String,
        groups: inout [String: Set<String>],
        depth: Int = 0
    ) throws -> Set<String> {
        guard item.hasPrefix("@") else { return [item] }
        if let known = groups[item] { return known }
        guard depth < 8 else { throw TestFailure("systemd's groups nest deeper than 8 at \(item)") }
        let (status, output) = try ChildProcess.run(
            "/usr/bin/systemd-analyze",
            ["syscall-filter", "--no-pager", item],
            mergingErrors: false,
            timeoutSeconds: 30
        )
        guard status == 0 else { throw TestFailure("systemd-analyze syscall-filter \(item): exit status \(status)") }
        var names = Set<String>()
        // The first line names the group; members follow, indented; "#" lines are its description.
        for line in output.split(separator: "\n").dropFirst() {
            let member = line.trimmingCharacters(in: .whitespaces)
            if member.isEmpty || member.hasPrefix("#") { continue }
            names.formUnion(try Self.expand(member, groups: &groups, depth: depth + 1))
        }
        guard !names.isEmpty else { throw TestFailure("systemd-analyze listed nothing for \(item)") }
        groups[item] = names
        return names
    }
}
