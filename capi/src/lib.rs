//! The C ABI of the cradle client (`include/cradle.h`): an opaque `cradle_client` handle over
//! a `client::SharedClient`, blocking calls that return a `cradle_status` code, and the
//! calling thread's last error message. C, C++, Java (FFM/JNI), Go (cgo) and Python (ctypes)
//! link it to speak cradle's own protocol, exactly-once writes and failover included.
//!
//! It must never unwind into C: every entry point runs its body under `catch_unwind` and
//! reports a panic (a bug) as `CRADLE_INTERNAL`. It never keeps a caller's pointer past the
//! call, and never writes past a length the caller gave.

mod status;

pub use status::*;

use client::{
    CasOutcome, ClientConfig, Error, IncrOutcome, Outcome, Request, RequestOptions, SharedClient,
};
use std::cell::RefCell;
use std::ffi::{c_char, CStr};
use std::net::{SocketAddr, ToSocketAddrs};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

/// The handle C holds: one client, usable from several threads at once.
pub struct CradleClient {
    client: SharedClient,
    /// Each call's deadline from its start (`None`: the retry budget alone bounds it).
    call_budget: Option<Duration>,
}

thread_local! {
    /// The last failed call's message, per calling thread.
    static LAST_ERROR: RefCell<String> = const { RefCell::new(String::new()) };
}

fn set_last_error(message: String) {
    LAST_ERROR.with(|last| *last.borrow_mut() = message);
}

/// Runs `body`, turning an error into its code (the message kept for
/// `cradle_last_error`) and a panic into `CRADLE_INTERNAL`.
fn guarded(body: impl FnOnce() -> Result<i32, Failure>) -> i32 {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(code)) => code,
        Ok(Err(failure)) => {
            set_last_error(failure.message);
            failure.code
        }
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            set_last_error(format!("internal error (a bug in cradle): {what}"));
            CRADLE_INTERNAL
        }
    }
}

/// A failed call: its code and message.
#[derive(Debug)]
struct Failure {
    code: i32,
    message: String,
}

impl Failure {
    fn invalid(message: &str) -> Failure {
        Failure { code: CRADLE_INVALID_ARGUMENT, message: message.to_string() }
    }
}

impl From<Error> for Failure {
    fn from(error: Error) -> Failure {
        Failure { code: code_of(&error), message: error.to_string() }
    }
}

/// Parses "host:port,host:port" (names are resolved; each gives its first address).
fn parse_servers(list: &str) -> Result<Vec<SocketAddr>, Failure> {
    let mut servers = Vec::new();
    for item in list.split(',').map(str::trim).filter(|item| !item.is_empty()) {
        let resolved = item
            .to_socket_addrs()
            .map_err(|error| Failure::invalid(&format!("server {item:?}: {error}")))?;
        let first = resolved.into_iter().next();
        servers
            .push(first.ok_or_else(|| Failure::invalid(&format!("server {item:?}: no address")))?);
    }
    if servers.is_empty() {
        return Err(Failure::invalid("no servers"));
    }
    Ok(servers)
}

/// Connects to `servers` ("host:port", several separated by commas, tried in order) and
/// writes the new handle to `*out`. `call_timeout_ms` bounds each later call (0: only the
/// retry budget, about 1 s per server, bounds it).
///
/// # Safety
/// `servers` is a NUL-terminated string; `out` points to writable storage for a pointer.
#[no_mangle]
pub unsafe extern "C" fn cradle_connect(
    servers: *const c_char,
    call_timeout_ms: u32,
    out: *mut *mut CradleClient,
) -> i32 {
    guarded(|| {
        if servers.is_null() || out.is_null() {
            return Err(Failure::invalid("servers and out must not be NULL"));
        }
        // SAFETY: non-null, and the caller promises a NUL-terminated string that outlives
        // the call; it is only read here.
        let list = unsafe { CStr::from_ptr(servers) };
        let list = list.to_str().map_err(|_| Failure::invalid("servers is not UTF-8"))?;
        let client = SharedClient::connect(ClientConfig::new(parse_servers(list)?))?;
        let call_budget =
            (call_timeout_ms > 0).then(|| Duration::from_millis(call_timeout_ms.into()));
        let handle = Box::into_raw(Box::new(CradleClient { client, call_budget }));
        // SAFETY: non-null, and the caller promises it is writable storage for a pointer.
        unsafe { out.write(handle) };
        Ok(CRADLE_OK)
    })
}

/// Closes `client` (NULL: nothing). Requests of other threads still in flight on it end
/// with `CRADLE_CANCELLED`; no call on it may start after this one.
///
/// # Safety
/// `client` is NULL or a handle from `cradle_connect` not closed yet.
#[no_mangle]
pub unsafe extern "C" fn cradle_close(client: *mut CradleClient) {
    let _ = guarded(|| {
        if !client.is_null() {
            // SAFETY: the caller promises a live handle from `cradle_connect` (a `Box`) that
            // no other call uses any more: ownership comes back here once.
            drop(unsafe { Box::from_raw(client) });
        }
        Ok(CRADLE_OK)
    });
}

/// Writes `value` under `key`; the new version goes to `*version` (when not NULL).
///
/// # Safety
/// `client` is a live handle; `key` points to `key_len` readable bytes, `value` to
/// `value_len` (either may be NULL when its length is 0); `version` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn cradle_put(
    client: *const CradleClient,
    key: *const u8,
    key_len: usize,
    value: *const u8,
    value_len: usize,
    version: *mut u64,
) -> i32 {
    guarded(|| {
        // SAFETY: the caller's promises, passed on (see `# Safety`).
        let (client, key, value) =
            unsafe { (handle(client)?, bytes(key, key_len)?, bytes(value, value_len)?) };
        let request = Request::Put { key: key.to_vec(), value: value.to_vec() };
        let written = client.call(request).into_version()?;
        // SAFETY: the caller promises `version` is NULL or writable.
        unsafe { write_opt(version, written) };
        Ok(CRADLE_OK)
    })
}

/// `cradle_put` of a value that lives `ttl_secs` seconds (0: for good): it reads as absent
/// from then on, and its space is reclaimed.
///
/// # Safety
/// As `cradle_put`.
#[no_mangle]
pub unsafe extern "C" fn cradle_put_ttl(
    client: *const CradleClient,
    key: *const u8,
    key_len: usize,
    value: *const u8,
    value_len: usize,
    ttl_secs: u32,
    version: *mut u64,
) -> i32 {
    guarded(|| {
        // SAFETY: the caller's promises, passed on (see `# Safety`).
        let (client, key, value) =
            unsafe { (handle(client)?, bytes(key, key_len)?, bytes(value, value_len)?) };
        let request =
            Request::PutWith { key: key.to_vec(), value: value.to_vec(), ttl_secs: Some(ttl_secs) };
        let written = client.call(request).into_version()?;
        // SAFETY: the caller promises `version` is NULL or writable.
        unsafe { write_opt(version, written) };
        Ok(CRADLE_OK)
    })
}

/// Adds `by` (negative: subtracts) to the count `key` holds (absent: 0), exactly once:
/// `CRADLE_OK` with the new count in `*count`; with `has_floor`, `CRADLE_BELOW_FLOOR` when
/// the count would go below `floor`, nothing written and the current count in `*count`
/// (when not NULL). A key that holds no count is refused (`CRADLE_REFUSED`).
///
/// # Safety
/// `client` is a live handle; `key` points to `key_len` readable bytes; `count` is NULL or
/// writable.
#[no_mangle]
pub unsafe extern "C" fn cradle_incr(
    client: *const CradleClient,
    key: *const u8,
    key_len: usize,
    by: i64,
    has_floor: bool,
    floor: i64,
    count: *mut i64,
) -> i32 {
    guarded(|| {
        // SAFETY: the caller's promises, passed on (see `# Safety`).
        let (client, key) = unsafe { (handle(client)?, bytes(key, key_len)?) };
        let floor = has_floor.then_some(floor);
        let request = Request::Incr { key: key.to_vec(), by, floor, ttl_secs: None };
        let (code, now) = match client.call(request).into_count()? {
            IncrOutcome::Counted { count } => (CRADLE_OK, count),
            IncrOutcome::BelowFloor { count } => (CRADLE_BELOW_FLOOR, count),
        };
        // SAFETY: the caller promises `count` is NULL or writable.
        unsafe { write_opt(count, now) };
        Ok(code)
    })
}

/// Reads `key`: `CRADLE_OK` with its value copied to `buf` (at most `buf_cap` bytes), its
/// length to `*value_len` and its version to `*version` (each when not NULL);
/// `CRADLE_NOT_FOUND` when absent; `CRADLE_BUFFER_TOO_SMALL` when the value is longer than
/// `buf_cap`, with `*value_len` set to its length and nothing copied (call again with a
/// buffer that large).
///
/// # Safety
/// `client` is a live handle; `key` points to `key_len` readable bytes; `buf` to `buf_cap`
/// writable bytes (NULL when `buf_cap` is 0); `value_len` and `version` are NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn cradle_get(
    client: *const CradleClient,
    key: *const u8,
    key_len: usize,
    buf: *mut u8,
    buf_cap: usize,
    value_len: *mut usize,
    version: *mut u64,
) -> i32 {
    guarded(|| {
        if buf.is_null() && buf_cap > 0 {
            return Err(Failure::invalid("buf is NULL with a non-zero buf_cap"));
        }
        // SAFETY: the caller's promises, passed on (see `# Safety`).
        let (client, key) = unsafe { (handle(client)?, bytes(key, key_len)?) };
        let Some(found) = client.call(Request::Get { key: key.to_vec() }).into_value()? else {
            return Ok(CRADLE_NOT_FOUND);
        };
        // SAFETY: the caller promises both are NULL or writable.
        unsafe {
            write_opt(value_len, found.bytes.len());
            write_opt(version, found.version);
        }
        if found.bytes.len() > buf_cap {
            set_last_error(format!("value of {} bytes, buffer of {buf_cap}", found.bytes.len()));
            return Ok(CRADLE_BUFFER_TOO_SMALL);
        }
        if !found.bytes.is_empty() {
            // SAFETY: `buf` is non-null here (len > 0 implies buf_cap > 0) and the caller
            // promises `buf_cap` writable bytes, of which we write `len` ≤ `buf_cap`; our
            // vector cannot overlap the caller's buffer.
            unsafe { std::ptr::copy_nonoverlapping(found.bytes.as_ptr(), buf, found.bytes.len()) };
        }
        Ok(CRADLE_OK)
    })
}

/// One key's result of `cradle_get_many`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct CradleValue {
    /// `CRADLE_OK`, `CRADLE_NOT_FOUND`, `CRADLE_BUFFER_TOO_SMALL` (the value did not fit in
    /// what the values before it left of the buffer), or the key's failure.
    pub status: i32,
    /// Where in the buffer the value starts (`CRADLE_OK`).
    pub offset: usize,
    /// The value's length (`CRADLE_OK`, `CRADLE_BUFFER_TOO_SMALL`).
    pub len: usize,
    /// The value's version (`CRADLE_OK`, `CRADLE_BUFFER_TOO_SMALL`).
    pub version: u64,
}

/// Reads `count` keys at once, the GETs packed into shared datagrams (16 small keys travel
/// in one): `results[i]` is key `i`'s result, the values found are copied into `buf` one
/// after another. Returns `CRADLE_OK` when every key was answered (found or not), else the
/// first other status of `results`; `CRADLE_IN_FLIGHT_FULL` or `CRADLE_KEY_TOO_LONG` (and
/// `results` untouched) when none could be sent.
///
/// # Safety
/// `client` is a live handle; `keys` and `key_lens` point to `count` entries, `keys[i]` to
/// `key_lens[i]` readable bytes; `buf` to `buf_cap` writable bytes (NULL when `buf_cap` is
/// 0); `results` to `count` writable `cradle_value`s.
#[no_mangle]
pub unsafe extern "C" fn cradle_get_many(
    client: *const CradleClient,
    count: usize,
    keys: *const *const u8,
    key_lens: *const usize,
    buf: *mut u8,
    buf_cap: usize,
    results: *mut CradleValue,
) -> i32 {
    guarded(|| {
        if count > 0 && (keys.is_null() || key_lens.is_null() || results.is_null()) {
            return Err(Failure::invalid("keys, key_lens and results must not be NULL"));
        }
        if buf.is_null() && buf_cap > 0 {
            return Err(Failure::invalid("buf is NULL with a non-zero buf_cap"));
        }
        // SAFETY: the caller promises a live handle.
        let client = unsafe { handle(client)? };
        let mut requests = Vec::with_capacity(count);
        for i in 0..count {
            // SAFETY: non-null (checked), and the caller promises `count` entries in each
            // array and `key_lens[i]` readable bytes at `keys[i]`; `i < count`.
            let key = unsafe { bytes(*keys.add(i), *key_lens.add(i))? };
            requests.push(Request::Get { key: key.to_vec() });
        }
        let outcomes = client.call_batch(requests)?;
        let mut used = 0;
        let mut first_other = CRADLE_OK;
        for (i, outcome) in outcomes.into_iter().enumerate() {
            let result = place(outcome, buf, buf_cap, &mut used);
            if first_other == CRADLE_OK && !matches!(result.status, CRADLE_OK | CRADLE_NOT_FOUND) {
                first_other = result.status;
            }
            // SAFETY: non-null (checked), and the caller promises `count` writable entries.
            unsafe { results.add(i).write(result) };
        }
        Ok(first_other)
    })
}

/// One GET's result, its value copied into `buf` at `*used` if it fits.
fn place(outcome: Outcome, buf: *mut u8, buf_cap: usize, used: &mut usize) -> CradleValue {
    let mut result = CradleValue { status: CRADLE_OK, offset: 0, len: 0, version: 0 };
    match outcome.into_value() {
        Ok(Some(value)) => {
            (result.len, result.version) = (value.bytes.len(), value.version);
            if value.bytes.len() > buf_cap - *used {
                result.status = CRADLE_BUFFER_TOO_SMALL;
                return result;
            }
            result.offset = *used;
            if !value.bytes.is_empty() {
                // SAFETY: `buf` is non-null (a non-empty value fitted, so `buf_cap` > 0, and
                // the caller checked NULL against it) with `buf_cap` writable bytes, and
                // `used + len ≤ buf_cap`; our vector cannot overlap the caller's buffer.
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        value.bytes.as_ptr(),
                        buf.add(*used),
                        value.bytes.len(),
                    )
                };
            }
            *used += value.bytes.len();
        }
        Ok(None) => result.status = CRADLE_NOT_FOUND,
        Err(error) => {
            result.status = code_of(&error);
            set_last_error(error.to_string());
        }
    }
    result
}

/// Removes `key`: `CRADLE_OK` when it existed, `CRADLE_NOT_FOUND` when it did not.
///
/// # Safety
/// `client` is a live handle; `key` points to `key_len` readable bytes.
#[no_mangle]
pub unsafe extern "C" fn cradle_delete(
    client: *const CradleClient,
    key: *const u8,
    key_len: usize,
) -> i32 {
    guarded(|| {
        // SAFETY: the caller's promises, passed on (see `# Safety`).
        let (client, key) = unsafe { (handle(client)?, bytes(key, key_len)?) };
        let existed = client.call(Request::Delete { key: key.to_vec() }).into_deleted()?;
        Ok(if existed { CRADLE_OK } else { CRADLE_NOT_FOUND })
    })
}

/// Writes `value` under `key` if its version is `expected_version` (0: only if absent):
/// `CRADLE_OK` with the new version in `*version`, or `CRADLE_VERSION_MISMATCH` with the
/// current one (0: absent) in `*version` (when not NULL).
///
/// # Safety
/// As `cradle_put`.
#[no_mangle]
pub unsafe extern "C" fn cradle_cas(
    client: *const CradleClient,
    key: *const u8,
    key_len: usize,
    expected_version: u64,
    value: *const u8,
    value_len: usize,
    version: *mut u64,
) -> i32 {
    guarded(|| {
        // SAFETY: the caller's promises, passed on (see `# Safety`).
        let (client, key, value) =
            unsafe { (handle(client)?, bytes(key, key_len)?, bytes(value, value_len)?) };
        let request = Request::Cas { key: key.to_vec(), expected_version, value: value.to_vec() };
        let (code, seen) = match client.call(request).into_cas()? {
            CasOutcome::Swapped { version } => (CRADLE_OK, version),
            CasOutcome::Mismatch { current_version } => (CRADLE_VERSION_MISMATCH, current_version),
        };
        // SAFETY: the caller promises `version` is NULL or writable.
        unsafe { write_opt(version, seen) };
        Ok(code)
    })
}

/// The calling thread's last error message, NUL-terminated, copied into `buf` (truncated to
/// `buf_cap - 1` bytes); returns its full length without the NUL. Empty when no call of this
/// thread failed yet.
///
/// # Safety
/// `buf` points to `buf_cap` writable bytes (NULL when `buf_cap` is 0).
#[no_mangle]
pub unsafe extern "C" fn cradle_last_error(buf: *mut c_char, buf_cap: usize) -> usize {
    let copied = catch_unwind(|| {
        LAST_ERROR.with(|last| {
            let message = last.borrow();
            if !buf.is_null() && buf_cap > 0 {
                let len = message.len().min(buf_cap - 1);
                // SAFETY: the caller promises `buf_cap` writable bytes at `buf`; we write
                // `len + 1` ≤ `buf_cap` of them, from our own string.
                unsafe {
                    std::ptr::copy_nonoverlapping(message.as_ptr().cast(), buf, len);
                    buf.add(len).write(0);
                }
            }
            message.len()
        })
    });
    copied.unwrap_or(0)
}

/// A static, NUL-terminated name of a status code ("CRADLE_OK", ...; "CRADLE_UNKNOWN" for a
/// code this library does not return).
#[no_mangle]
pub extern "C" fn cradle_status_name(status: i32) -> *const c_char {
    status::name_of(status).as_ptr()
}

impl CradleClient {
    /// The options of a call starting now: its deadline.
    fn options(&self) -> RequestOptions {
        RequestOptions { deadline: self.call_budget.map(|budget| Instant::now() + budget) }
    }

    /// `request`'s outcome, within the handle's call budget.
    fn call(&self, request: Request) -> Outcome {
        match self.client.submit(request, self.options()) {
            Ok(ticket) => ticket.wait(),
            Err(error) => Outcome::Failed(error),
        }
    }

    /// The outcomes of `requests`, sent together, within the handle's call budget; `Err`
    /// when none could be sent.
    fn call_batch(&self, requests: Vec<Request>) -> Result<Vec<Outcome>, Error> {
        let tickets = self.client.submit_batch(requests, self.options())?;
        Ok(tickets.into_iter().map(|ticket| ticket.wait()).collect())
    }
}

/// The handle behind `client`.
///
/// # Safety
/// `client` is NULL or a live handle from `cradle_connect`.
unsafe fn handle<'a>(client: *const CradleClient) -> Result<&'a CradleClient, Failure> {
    // SAFETY: the caller promises NULL or a live handle, which stays alive for the call.
    unsafe { client.as_ref() }.ok_or_else(|| Failure::invalid("client is NULL"))
}

/// `len` bytes at `ptr` (NULL allowed when `len` is 0).
///
/// # Safety
/// `ptr` points to `len` readable bytes that stay unchanged during the call.
unsafe fn bytes<'a>(ptr: *const u8, len: usize) -> Result<&'a [u8], Failure> {
    if len == 0 {
        return Ok(&[]);
    }
    if ptr.is_null() {
        return Err(Failure::invalid("a NULL pointer with a non-zero length"));
    }
    // SAFETY: non-null, and the caller promises `len` readable bytes for the call.
    Ok(unsafe { std::slice::from_raw_parts(ptr, len) })
}

/// Writes `value` to `*ptr` unless `ptr` is NULL.
///
/// # Safety
/// `ptr` is NULL or writable and aligned for a `T`.
unsafe fn write_opt<T>(ptr: *mut T, value: T) {
    if !ptr.is_null() {
        // SAFETY: non-null, and the caller promises it is writable and aligned.
        unsafe { ptr.write(value) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_lists_parse_and_bad_ones_say_why() {
        let servers = parse_servers("127.0.0.1:7000, localhost:7001").unwrap();
        assert_eq!(servers[0], "127.0.0.1:7000".parse().unwrap());
        assert_eq!(servers[1].port(), 7001);
        assert_eq!(parse_servers("").err().unwrap().code, CRADLE_INVALID_ARGUMENT);
        assert_eq!(parse_servers("no-port").err().unwrap().code, CRADLE_INVALID_ARGUMENT);
    }

    /// `cradle.h` is written by hand: its codes must be this library's, name for number.
    #[test]
    fn the_header_declares_the_codes_this_library_returns() {
        let header = include_str!("../include/cradle.h");
        let mut declared = Vec::new();
        for line in header.lines().map(str::trim).filter(|line| line.starts_with("CRADLE_")) {
            let (name, rest) = line.split_once('=').expect("NAME = number");
            let number = rest.trim().split(|c: char| !c.is_ascii_digit()).next().unwrap();
            declared.push((name.trim().to_string(), number.parse::<i32>().unwrap()));
        }
        assert_eq!(declared.len(), 16, "{declared:?}");
        for (name, number) in &declared {
            assert_eq!(status::name_of(*number).to_str().unwrap(), name, "code {number}");
        }
        let exported = [
            "cradle_connect(",
            "cradle_close(",
            "cradle_put(",
            "cradle_put_ttl(",
            "cradle_get(",
            "cradle_incr(",
            "cradle_delete(",
            "cradle_cas(",
            "cradle_last_error(",
            "cradle_status_name(",
        ];
        for function in exported {
            assert!(header.contains(function), "{function} is not declared");
        }
    }

    #[test]
    fn null_arguments_and_panics_become_codes_not_crashes() {
        // SAFETY: NULL is allowed for every pointer here; the calls must refuse it.
        unsafe {
            let mut out = std::ptr::null_mut();
            assert_eq!(cradle_connect(std::ptr::null(), 0, &mut out), CRADLE_INVALID_ARGUMENT);
            assert!(out.is_null());
            assert_eq!(
                cradle_put(
                    std::ptr::null(),
                    b"k".as_ptr(),
                    1,
                    std::ptr::null(),
                    0,
                    std::ptr::null_mut()
                ),
                CRADLE_INVALID_ARGUMENT
            );
            cradle_close(std::ptr::null_mut());
        }
        assert_eq!(guarded(|| panic!("on purpose")), CRADLE_INTERNAL);
        let mut buf = [0 as c_char; 64];
        // SAFETY: `buf` has 64 writable bytes.
        let len = unsafe { cradle_last_error(buf.as_mut_ptr(), buf.len()) };
        // SAFETY: `cradle_last_error` NUL-terminated it within its 64 bytes.
        let message = unsafe { CStr::from_ptr(buf.as_ptr()) }.to_str().unwrap();
        assert_eq!(message, "internal error (a bug in cradle): on purpose");
        assert_eq!(len, message.len());
        // SAFETY: `cradle_status_name` returns a static NUL-terminated string.
        let name = unsafe { CStr::from_ptr(cradle_status_name(CRADLE_NOT_FOUND)) };
        assert_eq!(name.to_str().unwrap(), "CRADLE_NOT_FOUND");
    }
}
