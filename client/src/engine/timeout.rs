//! Timer expiries, failover to other servers, and routing again.

use super::ClientCore;
use crate::error::Error;
use crate::request::RequestId;
use proto::Status;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// How often a client asks for the map while requests wait on a server it still names
/// (`ClientCore::watch_map`): a failover is seen this soon after the map group commits it,
/// whatever the requests' own timers have backed off to. Each poll is one small MAP request.
pub(crate) const MAP_WATCH: Duration = Duration::from_millis(5);

/// How long a server may answer BUSY before a request leaves it for the next configured
/// server (`ClientCore::on_busy`): longer than a promotion wait plus a failover of a backup.
pub(crate) const BUSY_FOR_MAX: Duration = Duration::from_secs(1);

impl ClientCore {
    /// Advances time to `now`: every request whose timer expired is resent, moved to the next
    /// server, or failed when its budget on every server is spent.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.map_watch_at.is_some_and(|at| at <= now) {
            self.watch_map(now);
        }
        while let Some(id) = self.timers.pop_expired(now) {
            let request = self.requests.get_mut(&id).expect("timer of a request in flight");
            request.deadline = None;
            self.on_timer(now, id);
            self.settle_vouches(now);
        }
    }

    fn on_timer(&mut self, now: Instant, id: RequestId) {
        let request = self.requests.get_mut(&id).expect("request in flight");
        if request.past_deadline(now) {
            self.stats.deadlines_exceeded += 1;
            return self.finish(id, Err(Error::DeadlineExceeded));
        }
        if request.window_closed(now, self.config.resend_window) {
            // Nothing may carry this tracking id any more (see `ClientConfig::resend_window`).
            let error = Error::Timeout { attempts: request.attempts_total, server: request.target };
            return self.finish(id, Err(error));
        }
        if request.awaiting_vouch {
            // (Armed for the window's end or the deadline: one of them has come.)
            let at = request.timer_at(request.window_start + self.config.resend_window);
            self.timers.set(id, None, at);
            request.deadline = Some(at);
            return;
        }
        if request.reroute {
            return self.reroute(now, id);
        }
        let current = self.router.rto(request.target, request.class);
        if !request.progress && request.exchange_samples() && current > request.rto {
            // The class's timeout grew since this timer was armed (slower replies to others,
            // or another's expiry backed it off): the request is timed by it, as TCP's one
            // timer for everything in flight is, so a slow spell costs one resend, not one per
            // request in flight.
            request.rto = current;
            let deadline = request.timer_at(request.sent_at + current);
            if deadline > now {
                self.timers.set(id, None, deadline);
                request.deadline = Some(deadline);
                return;
            }
        }
        if request.progress {
            // Fragments moved since the timer was armed: not a lost attempt, no backoff.
            request.rto = current;
        } else {
            if request.attempts_on_server >= self.config.attempts_per_server {
                return self.fail_over(now, id, None);
            }
            request.attempts_on_server += 1;
            request.attempts_total += 1;
            if request.exchange_samples() {
                // The class's estimate keeps the back-off until its next sample (Karn).
                self.router.on_expiry(request.target, request.class, request.rto);
            }
            request.rto = self.router.backoff(request.rto);
            // Lost on the server the map names: it may have died and the map moved on. Ask
            // another node for the map; if it names a new owner, the request goes there as
            // soon as the map comes (`reroute_waiting`), not after this server's budget.
            let ask = request.attempts_on_server >= 2
                && request.request.server().is_none()
                && self.router.map().is_some()
                && self.router.route_request(&request.request).addr == request.target;
            let target = request.target;
            if let Some(other) = ask.then(|| self.router.another_node(target)).flatten() {
                self.requests.get_mut(&id).expect("in flight").reroute = true;
                self.refresh_map(now, other);
                self.map_watch_at.get_or_insert(now + MAP_WATCH);
            }
        }
        self.stats.retransmits += 1;
        self.send_again(now, id, true);
    }

    /// The transport says `server` refused a datagram (ICMP port or host unreachable: nothing
    /// listens there, so it is down or never was). Requests on it do not wait out their
    /// timers: one whose key the known map still places there waits for a newer map, which
    /// is asked of another node at once and then every `MAP_WATCH`; any other goes to the
    /// next configured server. With none left, a request fails with the refusal at once if
    /// the server never answered (a wrong address), and otherwise goes on as if the datagram
    /// were lost (a server that answered before may be restarting). A map refresh or a vouch
    /// asked of it ends (the next goes elsewhere).
    pub fn handle_refused(&mut self, now: Instant, server: SocketAddr) {
        let mut on_it: Vec<RequestId> =
            self.requests.iter().filter(|(_, r)| r.target == server).map(|(&id, _)| id).collect();
        on_it.sort_unstable();
        for id in on_it {
            let request = self.requests.get_mut(&id).expect("in flight");
            request.refused = true;
            if request.internal {
                self.finish(id, Err(Error::Cancelled)); // (internal: nobody is told)
                self.map_watch_at = Some(now);
                continue;
            }
            let routed_there = request.request.server().is_none()
                && self.router.map().is_some()
                && self.router.route_request(&request.request).addr == server;
            let mut tried = request.tried.clone();
            tried.push(server);
            let elsewhere =
                request.request.server().is_none() && self.router.next_server(&tried).is_some();
            if routed_there && self.router.another_node(server).is_some() {
                let request = self.requests.get_mut(&id).expect("in flight");
                request.reroute = true;
                request.attempts_on_server = request.attempts_on_server.max(2);
                self.map_watch_at = Some(now);
            } else if elsewhere || !self.router.has_answered(server) {
                self.fail_over(now, id, None);
            } else {
                // (Its timer resends; the window decides when it is given up.)
                self.requests.get_mut(&id).expect("in flight").refused = false;
            }
        }
        self.settle_vouches(now);
        if self.map_watch_at.is_some_and(|at| at <= now) {
            self.watch_map(now);
        }
    }

    /// The current server is done with (budget spent or `status` UNAVAILABLE): try the next
    /// configured server, or fail. Requests about one server have no other to try.
    pub(super) fn fail_over(&mut self, now: Instant, id: RequestId, status: Option<Status>) {
        let request = &self.requests[&id];
        let mut tried = request.tried.clone();
        tried.push(request.target);
        let next = match request.request.server() {
            Some(_) => None,
            None => self.router.next_server(&tried),
        };
        if let Some(server) = next {
            if !self.router.vouched_for(server) {
                return self.wait_for_vouch(now, id, server);
            }
            return self.move_to(now, id, server);
        }
        let foreign = request.request.server().is_none().then(|| self.router.foreign_server());
        let error = match (status.or(request.last_status), foreign.flatten()) {
            (Some(status), _) => Error::Status(status),
            // The server left to fail over to is of another data set: say so, it is why.
            (None, Some(f)) => {
                Error::ForeignCluster { server: f.server, cluster: f.cluster, expected: f.expected }
            }
            (None, None) if request.refused => Error::Io(std::io::Error::new(
                std::io::ErrorKind::ConnectionRefused,
                format!("{} refused the request: nothing listens on that port", request.target),
            )),
            (None, None) => {
                Error::Timeout { attempts: request.attempts_total, server: request.target }
            }
        };
        self.finish(id, Err(error));
    }

    /// Moves `id` to `server`, a configured server not known to be of the client's cluster,
    /// without sending it: it waits for `server`'s map (`settle_vouches`), until its window
    /// closes or its deadline passes. A client never writes to another cluster's data.
    fn wait_for_vouch(&mut self, now: Instant, id: RequestId, server: SocketAddr) {
        let window = self.config.resend_window;
        let request = self.requests.get_mut(&id).expect("request in flight");
        request.window_for_move(server);
        request.reset_for_new_server(server);
        request.awaiting_vouch = true;
        let at = request.timer_at(request.window_start + window);
        self.timers.set(id, request.deadline, at);
        request.deadline = Some(at);
        self.vouch(now, server);
    }

    /// Sends `id` to `server` from scratch, same tracking id, fresh budget.
    pub(super) fn move_to(&mut self, now: Instant, id: RequestId, server: SocketAddr) {
        self.requests.get_mut(&id).expect("request in flight").window_for_move(server);
        if self.resend_window_closed(now, id) {
            return;
        }
        let request = self.requests.get_mut(&id).expect("request in flight");
        request.reset_for_new_server(server);
        self.send_fresh(now, id);
    }

    /// Routes `id` again by the current map.
    fn reroute(&mut self, now: Instant, id: RequestId) {
        let request = self.requests.get_mut(&id).expect("request in flight");
        request.reroute = false;
        let route = self.router.route_request(&request.request);
        request.partition = route.partition;
        if route.addr == request.target {
            self.send_fresh(now, id);
        } else {
            self.move_to(now, id, route.addr);
        }
    }

    /// Every `MAP_WATCH` while requests wait on servers the map still names, after two
    /// attempts there went unanswered: the map is asked for again, from the other nodes in
    /// turn (the one asked last may be down too), until a newer one names new owners
    /// (`reroute_waiting`) or no request waits any more.
    fn watch_map(&mut self, now: Instant) {
        self.map_watch_at = None;
        let mut suspects: Vec<SocketAddr> = self
            .requests
            .values()
            .filter(|r| !r.internal && r.request.server().is_none())
            .filter(|r| r.attempts_on_server >= 2 || r.busy.is_some_and(|(_, times)| times >= 2))
            .filter(|r| self.router.route_request(&r.request).addr == r.target)
            .map(|r| r.target)
            .collect();
        if suspects.is_empty() {
            return;
        }
        suspects.sort_unstable();
        suspects.dedup();
        self.map_watch_turn += 1;
        let Some(server) = self.router.server_in_turn(self.map_watch_turn, &suspects) else {
            return;
        };
        if let Some(current) = self.map_refresh.take() {
            self.finish(current, Err(Error::Cancelled)); // (internal: nobody is told)
        }
        self.refresh_map(now, server);
        self.map_watch_at = Some(now + MAP_WATCH);
    }

    /// A newer map arrived: requests waiting for one, and every request whose server it no
    /// longer names for its key, go out again by it.
    pub(super) fn reroute_waiting(&mut self, now: Instant) {
        self.map_watch_at = None;
        let mut waiting: Vec<RequestId> = self
            .requests
            .iter()
            .filter(|(_, request)| {
                let moved = || {
                    !request.internal
                        && !request.awaiting_vouch
                        && request.request.server().is_none()
                        && self.router.route_request(&request.request).addr != request.target
                };
                request.reroute || moved()
            })
            .map(|(&id, _)| id)
            .collect();
        waiting.sort_unstable(); // (in the order submitted, whatever the table's order)
        for id in waiting {
            self.reroute(now, id);
        }
    }
}
