import NIOCore
import Synchronization

/// Wakes one waiting task when something arrived, or lets it go after a timeout: the loops of a
/// cluster node wait on one each (a notification, or their polling interval, whichever comes
/// first). A signal with nobody waiting is kept for the next wait.
final class WakeSignal: Sendable {
    private struct State {
        var pending = false
        var waiter: (token: UInt64, continuation: CheckedContinuation<Void, Never>)?
        var lastToken: UInt64 = 0
    }

    private let state = Mutex(State())

    func signal() {
        let waiter = state.withLock { state -> CheckedContinuation<Void, Never>? in
            guard let waiter = state.waiter else {
                state.pending = true
                return nil
            }
            state.waiter = nil
            return waiter.continuation
        }
        waiter?.resume()
    }

    /// Returns once signalled (at once if a signal is pending), after `timeout`, or when the task
    /// is cancelled.
    func wait(upTo timeout: Duration, on loop: any EventLoop) async {
        await withTaskCancellationHandler {
            await waitForSignal(upTo: timeout, on: loop)
        } onCancel: {
            signal()
        }
    }

    private func waitForSignal(upTo timeout: Duration, on loop: any EventLoop) async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let token = state.withLock { state -> UInt64? in
                if state.pending {
                    state.pending = false
                    return nil
                }
                state.lastToken += 1
                state.waiter = (state.lastToken, continuation)
                return state.lastToken
            }
            guard let token else {
                continuation.resume()
                return
            }
            let nanoseconds =
                timeout.components.seconds * 1_000_000_000 + timeout.components.attoseconds / 1_000_000_000
            loop.scheduleTask(in: .nanoseconds(nanoseconds)) { [weak self] in
                let waiter = self?.state.withLock { state -> CheckedContinuation<Void, Never>? in
                    guard let waiter = state.waiter, waiter.token == token else { return nil }
                    state.waiter = nil
                    return waiter.continuation
                }
                waiter?.resume()
            }
        }
    }
}
