// Command mlharness is a test peer for discoverd's Python gossip backend: a real hashicorp/memberlist
// (Debian 0.2.2) node driven by JSON lines on stdin/stdout, an optional go-micro-style gossip registry
// layer (-micro, micro.go) and a generator of golden wire vectors (`mlharness vectors`, vectors.go).
//
// Protocol: every stdout line is one JSON object with an "event" key; every stdin line is one JSON
// command {"cmd": ..., "id": optional}. Each command ends with exactly one {"event":"ok"|"error"} line
// carrying "cmd" and the command's "id"; answer events ("members", "health", "services") come first and
// carry the same "id".
package main

import (
	"bufio"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"io/ioutil"
	"log"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

var outMu sync.Mutex

// emit writes one JSON line to stdout; the single writer for every goroutine.
func emit(ev map[string]interface{}) {
	b, err := json.Marshal(ev)
	if err != nil {
		b, _ = json.Marshal(map[string]interface{}{"event": "error", "error": err.Error()})
	}
	outMu.Lock()
	defer outMu.Unlock()
	os.Stdout.Write(append(b, '\n'))
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: mlharness node [flags] | mlharness vectors")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "vectors":
		printVectors()
	case "node":
		os.Exit(runNode(os.Args[2:]))
	default:
		fmt.Fprintf(os.Stderr, "unknown mode %q\n", os.Args[1])
		os.Exit(2)
	}
}

// optDur is a duration flag that remembers whether it was given ("0" allowed).
type optDur struct {
	set bool
	d   time.Duration
}

func (o *optDur) String() string { return o.d.String() }
func (o *optDur) Set(s string) error {
	d, err := time.ParseDuration(s)
	if s == "0" {
		d, err = 0, nil
	}
	o.set, o.d = err == nil, d
	return err
}

type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }
func (l *listFlag) Set(s string) error {
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			*l = append(*l, p)
		}
	}
	return nil
}

// harness is the node's delegate and event delegate.
type harness struct {
	ml    *memberlist.Memberlist
	queue *memberlist.TransmitLimitedQueue
	micro *registry // nil in plain mode
	kr    *memberlist.Keyring

	mu   sync.Mutex
	meta []byte
	down bool
}

// nodeEvent runs inside memberlist's callbacks (node lock held by the caller), so stateOf is safe here.
func nodeEvent(kind string, n *memberlist.Node) map[string]interface{} {
	state, inc := stateOf(n)
	return map[string]interface{}{"event": kind, "node": n.Name, "addr": n.Addr.String(),
		"port": n.Port, "meta": string(n.Meta), "state": state, "incarnation": inc}
}

func (h *harness) NotifyJoin(n *memberlist.Node)   { emit(nodeEvent("join", n)) }
func (h *harness) NotifyLeave(n *memberlist.Node)  { emit(nodeEvent("leave", n)) }
func (h *harness) NotifyUpdate(n *memberlist.Node) { emit(nodeEvent("update", n)) }

func (h *harness) NodeMeta(limit int) []byte {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.meta) > limit {
		return append([]byte(nil), h.meta[:limit]...)
	}
	return append([]byte(nil), h.meta...)
}

func (h *harness) NotifyMsg(b []byte) {
	if h.micro != nil {
		h.micro.notifyMsg(b)
		return
	}
	emit(map[string]interface{}{"event": "msg", "data": base64.StdEncoding.EncodeToString(b)})
}

func (h *harness) GetBroadcasts(overhead, limit int) [][]byte {
	return h.queue.GetBroadcasts(overhead, limit)
}

func (h *harness) LocalState(join bool) []byte {
	if h.micro != nil {
		return h.micro.localState(join)
	}
	return nil
}

func (h *harness) MergeRemoteState(buf []byte, join bool) {
	if h.micro != nil {
		h.micro.mergeRemoteState(buf, join)
	}
}

// rawBroadcast is a plain user broadcast for the TransmitLimitedQueue.
type rawBroadcast struct{ msg []byte }

func (b *rawBroadcast) Invalidates(memberlist.Broadcast) bool { return false }
func (b *rawBroadcast) Message() []byte                       { return b.msg }
func (b *rawBroadcast) Finished()                             {}

func randomName() string {
	b := make([]byte, 6)
	rand.Read(b)
	return "go-" + hex.EncodeToString(b)
}

func runNode(args []string) int {
	fs := flag.NewFlagSet("node", flag.ContinueOnError)
	name := fs.String("name", randomName(), "node name")
	bind := fs.String("bind", "127.0.0.1", "bind address")
	advertise := fs.String("advertise", "", "advertise address (default: from the bind address)")
	port := fs.Int("port", 0, "bind port (0 = OS-assigned)")
	preset := fs.String("preset", "local", "local|lan|wan")
	protocol := fs.Int("protocol", 0, "ProtocolVersion (0 = preset default)")
	compress := fs.Bool("compress", true, "EnableCompression")
	tcpPings := fs.Bool("tcp-pings", true, "TCP fallback pings (DisableTcpPings = !this)")
	meta := fs.String("meta", "", "node meta")
	micro := fs.Bool("micro", false, "go-micro gossip registry mode")
	logOn := fs.Bool("log", false, "memberlist logs to stderr")
	var pushpull, probeInt, probeTO, gossipInt optDur
	fs.Var(&pushpull, "pushpull", "PushPullInterval (0 disables)")
	fs.Var(&probeInt, "probe-interval", "ProbeInterval")
	fs.Var(&probeTO, "probe-timeout", "ProbeTimeout")
	fs.Var(&gossipInt, "gossip-interval", "GossipInterval")
	suspMult := fs.Int("suspicion-mult", 0, "SuspicionMult (0 = preset default)")
	var keys, join listFlag
	fs.Var(&keys, "key", "hex key (repeatable / comma-separated; first = primary)")
	fs.Var(&join, "join", "host:port seeds to join")
	if err := fs.Parse(args); err != nil {
		return 2
	}

	var conf *memberlist.Config
	switch *preset {
	case "local":
		conf = memberlist.DefaultLocalConfig()
	case "lan":
		conf = memberlist.DefaultLANConfig()
	case "wan":
		conf = memberlist.DefaultWANConfig()
	default:
		fmt.Fprintf(os.Stderr, "unknown preset %q\n", *preset)
		return 2
	}
	conf.Name, conf.BindAddr, conf.BindPort, conf.AdvertisePort = *name, *bind, *port, *port
	conf.AdvertiseAddr = *advertise
	conf.EnableCompression, conf.DisableTcpPings = *compress, !*tcpPings
	if *micro {
		conf.ProtocolVersion, conf.PushPullInterval = 4, 0
	}
	if *protocol != 0 {
		conf.ProtocolVersion = uint8(*protocol)
	}
	for _, o := range []struct {
		f *optDur
		d *time.Duration
	}{{&pushpull, &conf.PushPullInterval}, {&probeInt, &conf.ProbeInterval},
		{&probeTO, &conf.ProbeTimeout}, {&gossipInt, &conf.GossipInterval}} {
		if o.f.set {
			*o.d = o.f.d
		}
	}
	if *suspMult != 0 {
		conf.SuspicionMult = *suspMult
	}
	if len(keys) > 0 {
		var raw [][]byte
		for _, k := range keys {
			b, err := hex.DecodeString(k)
			if err != nil {
				fmt.Fprintf(os.Stderr, "bad key %q: %v\n", k, err)
				return 2
			}
			raw = append(raw, b)
		}
		kr, err := memberlist.NewKeyring(raw, raw[0])
		if err != nil {
			fmt.Fprintf(os.Stderr, "keyring: %v\n", err)
			return 2
		}
		conf.Keyring = kr
	}
	conf.LogOutput = ioutil.Discard
	if *logOn {
		conf.LogOutput = os.Stderr
	}

	h := &harness{meta: []byte(*meta), kr: conf.Keyring}
	conf.Delegate, conf.Events = h, h
	h.queue = &memberlist.TransmitLimitedQueue{RetransmitMult: 3, NumNodes: func() int {
		h.mu.Lock()
		ml := h.ml
		h.mu.Unlock()
		if ml == nil {
			return 1
		}
		return ml.NumMembers()
	}}
	if *micro {
		h.micro = newRegistry(h.queue, conf.PushPullInterval > 0)
	}
	ml, err := memberlist.Create(conf)
	if err != nil {
		fmt.Fprintf(os.Stderr, "create: %v\n", err)
		return 1
	}
	h.mu.Lock()
	h.ml = ml
	h.mu.Unlock()
	if h.micro != nil {
		go h.micro.expiryLoop()
	}
	ln := ml.LocalNode()
	emit(map[string]interface{}{"event": "ready", "name": ln.Name, "addr": ln.Addr.String(), "port": ln.Port,
		"node_states": internalStates})
	if len(join) > 0 {
		if n, err := ml.Join(join); err != nil {
			emit(map[string]interface{}{"event": "error", "cmd": "join", "error": err.Error()})
		} else {
			emit(map[string]interface{}{"event": "ok", "cmd": "join", "joined": n})
		}
	}
	h.commandLoop(os.Stdin)
	h.shutdown()
	return 0
}

func (h *harness) shutdown() {
	h.mu.Lock()
	was := h.down
	h.down = true
	h.mu.Unlock()
	if !was {
		h.ml.Shutdown()
	}
}

type command struct {
	Cmd       string          `json:"cmd"`
	All       bool            `json:"all"`
	ID        json.RawMessage `json:"id,omitempty"`
	Addrs     []string        `json:"addrs"`
	Data      string          `json:"data"`
	Node      string          `json:"node"`
	TimeoutMs int             `json:"timeout_ms"`
	Meta      string          `json:"meta"`
	Key       string          `json:"key"`
	Service   *Service        `json:"service"`
	TTLMs     int64           `json:"ttl_ms"`
}

func (h *harness) commandLoop(in io.Reader) {
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 64*1024), 64<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		var c command
		if err := json.Unmarshal([]byte(line), &c); err != nil {
			emit(map[string]interface{}{"event": "error", "cmd": "", "error": "bad command: " + err.Error()})
			continue
		}
		reply := func(ev map[string]interface{}) map[string]interface{} {
			ev["cmd"] = c.Cmd
			if len(c.ID) > 0 {
				ev["id"] = c.ID
			}
			return ev
		}
		extra, err := h.run(&c, func(ev map[string]interface{}) { emit(reply(ev)) })
		if err != nil {
			emit(reply(map[string]interface{}{"event": "error", "error": err.Error()}))
		} else {
			if extra == nil {
				extra = map[string]interface{}{}
			}
			extra["event"] = "ok"
			emit(reply(extra))
		}
		if c.Cmd == "shutdown" && err == nil {
			return
		}
	}
	if err := sc.Err(); err != nil {
		fmt.Fprintf(os.Stderr, "stdin: %v\n", err)
	}
}

// run executes one command; answer events go through answer, extra fields are merged into "ok".
func (h *harness) run(c *command, answer func(map[string]interface{})) (map[string]interface{}, error) {
	h.mu.Lock()
	down := h.down
	h.mu.Unlock()
	if down && c.Cmd != "shutdown" {
		return nil, fmt.Errorf("node is shut down")
	}
	switch c.Cmd {
	case "members":
		answer(map[string]interface{}{"event": "members", "members": memberList(h.ml, c.All)})
	case "health":
		answer(map[string]interface{}{"event": "health", "score": h.ml.GetHealthScore()})
	case "join":
		n, err := h.ml.Join(c.Addrs)
		if err != nil {
			return nil, err
		}
		return map[string]interface{}{"joined": n}, nil
	case "broadcast":
		data, err := base64.StdEncoding.DecodeString(c.Data)
		if err != nil {
			return nil, err
		}
		h.queue.QueueBroadcast(&rawBroadcast{msg: data})
	case "send-reliable":
		data, err := base64.StdEncoding.DecodeString(c.Data)
		if err != nil {
			return nil, err
		}
		for _, n := range h.ml.Members() {
			if n.Name == c.Node {
				return nil, h.ml.SendReliable(n, data)
			}
		}
		return nil, fmt.Errorf("unknown node %q", c.Node)
	case "leave":
		return nil, h.ml.Leave(time.Duration(c.TimeoutMs) * time.Millisecond)
	case "shutdown":
		h.shutdown()
	case "update-meta":
		h.mu.Lock()
		h.meta = []byte(c.Meta)
		h.mu.Unlock()
		return nil, h.ml.UpdateNode(time.Second)
	case "use-key", "add-key", "remove-key":
		return nil, h.keyCommand(c)
	case "register", "deregister", "list":
		if h.micro == nil {
			return nil, fmt.Errorf("%s needs -micro", c.Cmd)
		}
		return nil, h.micro.command(c, answer)
	default:
		return nil, fmt.Errorf("unknown command %q", c.Cmd)
	}
	return nil, nil
}

func (h *harness) keyCommand(c *command) error {
	key, err := hex.DecodeString(c.Key)
	if err != nil {
		return err
	}
	kr := h.kr
	if kr == nil {
		return fmt.Errorf("no keyring (start the node with -key)")
	}
	switch c.Cmd {
	case "use-key":
		return kr.UseKey(key)
	case "add-key":
		return kr.AddKey(key)
	default:
		return kr.RemoveKey(key)
	}
}

func init() { log.SetOutput(os.Stderr) }
