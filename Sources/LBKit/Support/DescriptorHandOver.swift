import CLinux

#if canImport(Glibc)
import Glibc
#endif

/// The descriptors a process l4lb starts (a live upgrade's new generation, a daemon's child) gets:
/// the ones passed, renumbered 3, 4, 5, ... in order, and no other from 3 up.
///
/// Marking every other descriptor close-on-exec before the spawn is not enough: another thread
/// may open one between the marking and the spawn, and SwiftNIO (the admin endpoint, health probes)
/// and hiredis open theirs without close-on-exec. A socket carried along like that lives on in the
/// new process: its peer never sees it closed. So the child closes everything itself
/// (posix_spawn's closefrom action), and the descriptors it keeps are first moved below that line.
///
/// The plan is a value: the dup2 steps and the line, computed from the numbers alone.
public struct DescriptorHandOver: Sendable, Equatable {
    /// The descriptors to pass, in this process's numbering.
    public let passed: [Int32]

    public init(passing passed: [Int32]) {
        self.passed = passed
    }

    /// The number of `passed[index]` in the child.
    public func childDescriptor(at index: Int) -> Int32 { 3 + Int32(index) }

    /// The number `fd` (one of `passed`) has in the child.
    public func childDescriptor(of fd: Int32) -> Int32? {
        self.passed.firstIndex(of: fd).map { self.childDescriptor(at: $0) }
    }

    /// The child closes every descriptor from this one up, after the moves.
    public var closeFrom: Int32 { 3 + Int32(self.passed.count) }

    /// The dup2 steps, in order. Each passed descriptor goes first to a number above every passed
    /// one and above the final range, then to its final number: moved directly, one could land on
    /// another passed descriptor not yet moved (passing 4 and 3 in that order). The temporary
    /// numbers are then closed with the rest.
    public var moves: [(from: Int32, to: Int32)] {
        guard let highest = self.passed.max() else { return [] }
        let temporary = max(highest, self.closeFrom - 1) + 1
        let out = self.passed.enumerated().map { (from: $0.element, to: temporary + Int32($0.offset)) }
        let back = self.passed.indices.map { (from: temporary + Int32($0), to: self.childDescriptor(at: $0)) }
        return out + back
    }

    /// Adds the moves and the close to `actions`; the first error (an errno value), or 0.
    public func addActions(to actions: inout posix_spawn_file_actions_t) -> Int32 {
        for move in self.moves {
            let status = posix_spawn_file_actions_adddup2(&actions, move.from, move.to)
            if status != 0 { return status }
        }
        return l4lb_spawn_close_from(&actions, self.closeFrom)
    }
}
