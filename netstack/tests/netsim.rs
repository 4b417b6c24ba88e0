//! Deterministic network simulation, after smoltcp's `tests/netsim.rs`: a plain smoltcp client
//! (the "guest") and our any-IP [`Stack`] (the "host") wired through two lossy, reordering
//! in-memory links, on a virtual clock the test advances. The client dials an address that
//! exists nowhere; the host side of the stack must still receive (or send) 10 MB intact.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::net::SocketAddr;

use idagent_netstack::stack::{Duration, Instant, TcpCloseReason};
use idagent_netstack::{Stack, StackConfig, StackEvent};
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{self, DeviceCapabilities, Medium};
use smoltcp::socket::tcp;
use smoltcp::wire::{HardwareAddress, IpCidr, Ipv4Address, Ipv6Address};

const MTU: usize = 1500;
const LOSS: f64 = 0.05;
const REORDER: f64 = 0.02;
const LATENCY: Duration = Duration::from_millis(1);
const TEN_MB: usize = 10 * 1000 * 1000;
/// Virtual time after which the test gives up (a hang would otherwise be silent).
const VIRTUAL_LIMIT: Duration = Duration::from_secs(3600);

/// The client's device: plain queues.
#[derive(Debug, Default)]
struct QueueDevice {
    rx: VecDeque<Vec<u8>>,
    tx: VecDeque<Vec<u8>>,
}

struct Rx(Vec<u8>);
struct Tx<'a>(&'a mut VecDeque<Vec<u8>>);

impl phy::RxToken for Rx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl phy::TxToken for Tx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut packet = vec![0; len];
        let r = f(&mut packet);
        self.0.push_back(packet);
        r
    }
}

impl phy::Device for QueueDevice {
    type RxToken<'a> = Rx;
    type TxToken<'a> = Tx<'a>;
    fn receive(&mut self, _: Instant) -> Option<(Rx, Tx<'_>)> {
        let packet = self.rx.pop_front()?;
        Some((Rx(packet), Tx(&mut self.tx)))
    }
    fn transmit(&mut self, _: Instant) -> Option<Tx<'_>> {
        Some(Tx(&mut self.tx))
    }
    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ip;
        caps.max_transmission_unit = MTU;
        caps
    }
}

/// One direction of the wire: fixed latency, seeded loss, some packets held back (reordering).
struct Link {
    rng: ChaCha8Rng,
    in_flight: BinaryHeap<Reverse<(Instant, u64, Vec<u8>)>>,
    sent: u64,
    lost: u64,
}

impl Link {
    fn new(seed: u64) -> Self {
        Self {
            rng: ChaCha8Rng::seed_from_u64(seed),
            in_flight: BinaryHeap::new(),
            sent: 0,
            lost: 0,
        }
    }

    fn send(&mut self, packet: Vec<u8>, now: Instant) {
        self.sent += 1;
        if self.rng.random_bool(LOSS) {
            self.lost += 1;
            return;
        }
        let mut at = now + LATENCY;
        if self.rng.random_bool(REORDER) {
            at += Duration::from_micros(self.rng.random_range(100..3000));
        }
        self.in_flight.push(Reverse((at, self.sent, packet)));
    }

    fn deliver(&mut self, now: Instant) -> Option<Vec<u8>> {
        let Reverse((at, _, _)) = self.in_flight.peek()?;
        if *at > now {
            return None;
        }
        self.in_flight.pop().map(|Reverse((_, _, p))| p)
    }

    fn next_delivery(&self) -> Option<Instant> {
        self.in_flight.peek().map(|Reverse((at, _, _))| *at)
    }
}

/// A seeded byte stream, produced on one side and checked on the other. Bytes are served from
/// 64-byte blocks so the stream does not depend on how it is chunked (ChaCha's `fill_bytes`
/// discards the unused part of a word).
struct Stream {
    rng: ChaCha8Rng,
    block: [u8; 64],
    used: usize,
    left: usize,
    hash: u64,
}

impl Stream {
    fn new(seed: u64, len: usize) -> Self {
        Self {
            rng: ChaCha8Rng::seed_from_u64(seed),
            block: [0; 64],
            used: 64,
            left: len,
            hash: 0xcbf2_9ce4_8422_2325,
        }
    }

    fn next_bytes(&mut self, out: &mut [u8]) {
        for b in out {
            if self.used == self.block.len() {
                self.rng.fill_bytes(&mut self.block);
                self.used = 0;
            }
            *b = self.block[self.used];
            self.used += 1;
        }
    }

    /// Fills up to `buf.len()` next bytes; returns how many.
    fn produce(&mut self, buf: &mut [u8]) -> usize {
        let n = buf.len().min(self.left);
        self.next_bytes(&mut buf[..n]);
        self.absorb(&buf[..n]);
        self.left -= n;
        n
    }

    /// Checks received bytes against the next expected ones.
    fn verify(&mut self, got: &[u8]) {
        assert!(got.len() <= self.left, "received more than was sent");
        let mut want = vec![0; got.len()];
        self.next_bytes(&mut want);
        assert!(
            want == got,
            "stream corrupted with {} bytes left",
            self.left
        );
        self.absorb(got);
        self.left -= got.len();
    }

    /// FNV-1a over everything produced or verified, to compare the two ends at the finish.
    fn absorb(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.hash = (self.hash ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

struct Client {
    iface: Interface,
    device: QueueDevice,
    sockets: SocketSet<'static>,
    handle: SocketHandle,
}

impl Client {
    fn connect(dst: SocketAddr, now: Instant) -> Self {
        let mut device = QueueDevice::default();
        let mut config = Config::new(HardwareAddress::Ip);
        config.random_seed = 0x5eed;
        let mut iface = Interface::new(config, &mut device, now);
        iface.update_ip_addrs(|a| {
            let _ = a.push(IpCidr::new(Ipv4Address::new(10, 77, 0, 2).into(), 24));
            let v6 = Ipv6Address::new(0xfd00, 0x77, 0, 0, 0, 0, 0, 2);
            let _ = a.push(IpCidr::new(v6.into(), 64));
        });
        let routes = iface.routes_mut();
        let _ = routes.add_default_ipv4_route(Ipv4Address::new(10, 77, 0, 1));
        let _ = routes.add_default_ipv6_route(Ipv6Address::new(0xfd00, 0x77, 0, 0, 0, 0, 0, 1));
        let mut socket = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; 256 * 1024]),
            tcp::SocketBuffer::new(vec![0; 256 * 1024]),
        );
        socket.set_nagle_enabled(false);
        socket
            .connect(iface.context(), dst, 49_152)
            .expect("client connect");
        let mut sockets = SocketSet::new(Vec::new());
        let handle = sockets.add(socket);
        Self {
            iface,
            device,
            sockets,
            handle,
        }
    }

    fn socket(&mut self) -> &mut tcp::Socket<'static> {
        self.sockets.get_mut::<tcp::Socket>(self.handle)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    /// Guest → host: the client sends, the host reads with `tcp_recv`.
    Upload,
    /// Host → guest: the host writes with `tcp_send`, the client reads.
    Download,
}

/// The guest's application: send the stream (then close), or read and check it (then close).
fn guest_app(
    socket: &mut tcp::Socket<'static>,
    direction: Direction,
    sender: &mut Stream,
    receiver: &mut Stream,
) {
    match direction {
        Direction::Upload if socket.can_send() && sender.left > 0 => {
            let _ = socket.send(|buf| (sender.produce(buf), ()));
        }
        Direction::Upload if sender.left == 0 && socket.send_queue() == 0 => socket.close(),
        Direction::Download if socket.can_recv() => {
            let _ = socket.recv(|buf| {
                receiver.verify(buf);
                (buf.len(), ())
            });
        }
        Direction::Download if receiver.left == 0 => socket.close(),
        _ => {}
    }
}

fn simulate(dst: SocketAddr, direction: Direction, len: usize, seed: u64) {
    let started = std::time::Instant::now();
    let mut now = Instant::ZERO;
    let config = StackConfig {
        mtu: MTU,
        random_seed: seed,
        ..StackConfig::default()
    };
    let mut stack = Stack::new(config, now).expect("stack");
    let mut client = Client::connect(dst, now);
    let mut up = Link::new(seed ^ 1);
    let mut down = Link::new(seed ^ 2);
    let mut sender = Stream::new(seed ^ 3, len);
    let mut receiver = Stream::new(seed ^ 3, len);
    let mut flow = None;
    let mut pending: Vec<u8> = Vec::new();
    let mut pending_at = 0;
    let mut closed = None;
    let mut host_closed = false;
    let mut finished_at = now;

    while closed.is_none() {
        assert!(now < Instant::ZERO + VIRTUAL_LIMIT, "simulation stalled");
        // Guest: application, stack, application again (reacting to what the stack just
        // processed), stack again (sending it), all at this instant.
        for _ in 0..2 {
            guest_app(client.socket(), direction, &mut sender, &mut receiver);
            client
                .iface
                .poll(now, &mut client.device, &mut client.sockets);
        }
        while let Some(p) = client.device.tx.pop_front() {
            up.send(p, now);
        }
        // Host side.
        while let Some(p) = up.deliver(now) {
            let _ = stack.receive(&p, now);
        }
        stack.poll(now);
        while let Some(event) = stack.next_event() {
            match event {
                StackEvent::TcpOpened { id, src, dst: got } => {
                    assert_eq!(got, dst, "flow must report the original destination");
                    assert_eq!(src.port(), 49_152);
                    flow = Some(id);
                }
                StackEvent::TcpClosed { id, reason } => {
                    assert_eq!(Some(id), flow);
                    closed = Some(reason);
                    finished_at = now;
                }
                _ => {}
            }
        }
        if let Some(id) = flow.filter(|_| closed.is_none()) {
            let mut buf = [0; 16 * 1024];
            loop {
                match stack.tcp_recv(id, &mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        assert_eq!(direction, Direction::Upload);
                        receiver.verify(&buf[..n]);
                    }
                    Err(_) => {
                        // End of the guest's stream: answer with our own FIN.
                        if !host_closed {
                            stack.tcp_close(id).expect("close");
                            host_closed = true;
                        }
                        break;
                    }
                }
            }
            while direction == Direction::Download && !host_closed {
                if pending_at == pending.len() {
                    pending.resize(64 * 1024, 0);
                    let n = sender.produce(&mut pending);
                    pending.truncate(n);
                    pending_at = 0;
                    if n == 0 {
                        stack.tcp_close(id).expect("close");
                        host_closed = true;
                        break;
                    }
                }
                let n = stack.tcp_send(id, &pending[pending_at..]).expect("send");
                pending_at += n;
                if n == 0 {
                    break;
                }
            }
            stack.poll(now);
        }
        while let Some(p) = stack.transmit() {
            down.send(p, now);
        }
        while let Some(p) = down.deliver(now) {
            client.device.rx.push_back(p);
        }
        // Anything just delivered to the client is processed at the same instant; otherwise
        // jump to the next timer or arrival.
        if client.device.rx.is_empty() && closed.is_none() {
            let next = [
                client.iface.poll_at(now, &client.sockets),
                stack.poll_at(now),
                up.next_delivery(),
                down.next_delivery(),
            ]
            .into_iter()
            .flatten()
            .min();
            now = match next {
                Some(t) if t > now => t,
                _ => now + Duration::from_micros(100),
            };
        }
    }

    let reason = closed.expect("closed");
    assert_eq!(reason, TcpCloseReason::Graceful);
    assert_eq!(receiver.left, 0, "all bytes arrived");
    assert_eq!(receiver.hash, sender.hash, "stream hash");
    // Let the client's TIME-WAIT and any stray retransmission play out; nothing may leak.
    for _ in 0..100 {
        now += Duration::from_millis(200);
        client
            .iface
            .poll(now, &mut client.device, &mut client.sockets);
        stack.poll(now);
    }
    let stats = stack.stats();
    assert_eq!(
        (stats.tcp_flows, stats.tcp_buffer_bytes),
        (0, 0),
        "{stats:?}"
    );
    eprintln!(
        "netsim {dst} {}: {len} bytes in {} ms virtual, {:?} wall; up {} sent / {} lost, down {} \
         sent / {} lost",
        if direction == Direction::Upload {
            "upload"
        } else {
            "download"
        },
        finished_at.total_millis(),
        started.elapsed(),
        up.sent,
        up.lost,
        down.sent,
        down.lost,
    );
}

#[test]
fn upload_10mb_to_an_arbitrary_v4_address_through_a_lossy_link() {
    simulate(
        "203.0.113.7:443".parse().expect("addr"),
        Direction::Upload,
        TEN_MB,
        1,
    );
}

#[test]
fn download_10mb_from_an_arbitrary_v4_address_through_a_lossy_link() {
    simulate(
        "203.0.113.7:443".parse().expect("addr"),
        Direction::Download,
        TEN_MB,
        2,
    );
}

#[test]
fn upload_1mb_to_an_arbitrary_v6_address_through_a_lossy_link() {
    let dst = "[2001:db8:77::7]:8443".parse().expect("addr");
    simulate(dst, Direction::Upload, TEN_MB / 10, 3);
}
