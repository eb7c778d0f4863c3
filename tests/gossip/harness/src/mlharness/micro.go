package main

// A go-micro style gossip registry participant (behaviour of go-micro v1.11.3 registry/gossip as described
// in the project's spec, sections 2.5-2.6; written from that description). One deliberate deviation:
// merging a service keeps the other versions of the same name (go-micro's Merge loses later versions).

import (
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
	"google.golang.org/protobuf/encoding/protowire"
)

type Value struct {
	Name   string   `json:"name"`
	Type   string   `json:"type"`
	Values []*Value `json:"values"`
}

type Endpoint struct {
	Name     string            `json:"name"`
	Request  *Value            `json:"request"`
	Response *Value            `json:"response"`
	Metadata map[string]string `json:"metadata"`
}

type MicroNode struct {
	Id       string            `json:"id"`
	Address  string            `json:"address"`
	Metadata map[string]string `json:"metadata"`
}

type Service struct {
	Name      string            `json:"name"`
	Version   string            `json:"version"`
	Metadata  map[string]string `json:"metadata"`
	Endpoints []*Endpoint       `json:"endpoints"`
	Nodes     []*MicroNode      `json:"nodes"`
}

const (
	actionCreate = 1
	actionDelete = 2
	typeService  = 1
	jsonType     = "application/json"
)

// update is the go-micro gossip Update protobuf: expires=1 uint64, type=2 int32, action=3 int32,
// metadata=6 map<string,string>, data=7 bytes.
type update struct {
	Expires  uint64
	Type     int32
	Action   int32
	Metadata map[string]string
	Data     []byte
}

func (u *update) marshal() []byte {
	var b []byte
	if u.Expires != 0 {
		b = protowire.AppendVarint(protowire.AppendTag(b, 1, protowire.VarintType), u.Expires)
	}
	if u.Type != 0 {
		b = protowire.AppendVarint(protowire.AppendTag(b, 2, protowire.VarintType), uint64(int64(u.Type)))
	}
	if u.Action != 0 {
		b = protowire.AppendVarint(protowire.AppendTag(b, 3, protowire.VarintType), uint64(int64(u.Action)))
	}
	keys := make([]string, 0, len(u.Metadata))
	for k := range u.Metadata {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		var e []byte
		e = protowire.AppendString(protowire.AppendTag(e, 1, protowire.BytesType), k)
		e = protowire.AppendString(protowire.AppendTag(e, 2, protowire.BytesType), u.Metadata[k])
		b = protowire.AppendBytes(protowire.AppendTag(b, 6, protowire.BytesType), e)
	}
	if len(u.Data) > 0 {
		b = protowire.AppendBytes(protowire.AppendTag(b, 7, protowire.BytesType), u.Data)
	}
	return b
}

// eachField calls f with every field's number, wire type and value bytes (a varint or a length-prefixed
// payload without its prefix); groups and fixed-width fields are skipped.
func eachField(b []byte, f func(protowire.Number, protowire.Type, []byte)) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeField(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		_, _, tag := protowire.ConsumeTag(b)
		val := b[tag:n]
		b = b[n:]
		if typ == protowire.BytesType {
			val, _ = protowire.ConsumeBytes(val)
		}
		if typ == protowire.VarintType || typ == protowire.BytesType {
			f(num, typ, val)
		}
	}
	return nil
}

func unmarshalUpdate(b []byte) (*update, error) {
	u := &update{Metadata: map[string]string{}}
	var entryErr error
	err := eachField(b, func(num protowire.Number, typ protowire.Type, val []byte) {
		v, _ := protowire.ConsumeVarint(val)
		switch {
		case typ == protowire.VarintType && num == 1:
			u.Expires = v
		case typ == protowire.VarintType && num == 2:
			u.Type = int32(v)
		case typ == protowire.VarintType && num == 3:
			u.Action = int32(v)
		case typ == protowire.BytesType && num == 7:
			u.Data = append([]byte(nil), val...)
		case typ == protowire.BytesType && num == 6:
			var key, value string
			if err := eachField(val, func(n protowire.Number, t protowire.Type, kv []byte) {
				if t == protowire.BytesType && n == 1 {
					key = string(kv)
				} else if t == protowire.BytesType && n == 2 {
					value = string(kv)
				}
			}); err != nil {
				entryErr = err
			}
			u.Metadata[key] = value
		}
	})
	if err == nil {
		err = entryErr
	}
	if err != nil {
		return nil, err
	}
	return u, nil
}

// uniqueBroadcast is never invalidated by later broadcasts (memberlist.UniqueBroadcast).
type uniqueBroadcast struct{ msg []byte }

func (b *uniqueBroadcast) Invalidates(memberlist.Broadcast) bool { return false }
func (b *uniqueBroadcast) Message() []byte                       { return b.msg }
func (b *uniqueBroadcast) Finished()                             {}
func (b *uniqueBroadcast) UniqueBroadcast()                      {}

type expiry struct {
	expires uint64
	svc     *Service
}

type registry struct {
	queue    *memberlist.TransmitLimitedQueue
	pushPull bool

	mu       sync.Mutex
	services map[string][]*Service
	expiries map[[32]byte]expiry
}

func newRegistry(q *memberlist.TransmitLimitedQueue, pushPull bool) *registry {
	return &registry{queue: q, pushPull: pushPull, services: map[string][]*Service{},
		expiries: map[[32]byte]expiry{}}
}

func serviceKey(s *Service) [32]byte {
	b, _ := json.Marshal(s)
	return sha256.Sum256(b)
}

// mergeService adds s to list: the entry with the same version gets s's nodes first, then its own other
// nodes; other versions are kept; a new version is appended.
func mergeService(list []*Service, s *Service) []*Service {
	out := make([]*Service, 0, len(list)+1)
	found := false
	for _, old := range list {
		if old.Version != s.Version {
			out = append(out, old)
			continue
		}
		found = true
		cp := *old
		cp.Nodes = append([]*MicroNode(nil), s.Nodes...)
		for _, n := range old.Nodes {
			if !hasNode(s.Nodes, n.Id) {
				cp.Nodes = append(cp.Nodes, n)
			}
		}
		out = append(out, &cp)
	}
	if !found {
		cp := *s
		out = append(out, &cp)
	}
	return out
}

// removeService deletes s's node ids from the entry with s's version; empty entries are dropped.
func removeService(list []*Service, s *Service) []*Service {
	var out []*Service
	for _, old := range list {
		if old.Version == s.Version {
			cp := *old
			cp.Nodes = nil
			for _, n := range old.Nodes {
				if !hasNode(s.Nodes, n.Id) {
					cp.Nodes = append(cp.Nodes, n)
				}
			}
			if len(cp.Nodes) == 0 {
				continue
			}
			old = &cp
		}
		out = append(out, old)
	}
	return out
}

func hasNode(nodes []*MicroNode, id string) bool {
	for _, n := range nodes {
		if n.Id == id {
			return true
		}
	}
	return false
}

// apply is the update loop: create/delete on the local map, expiry bookkeeping, one "micro" event.
func (r *registry) apply(action int32, expires uint64, s *Service, source string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	key := serviceKey(s)
	name := "create"
	if action == actionCreate {
		r.services[s.Name] = mergeService(r.services[s.Name], s)
		if expires > 0 {
			r.expiries[key] = expiry{expires: expires, svc: s}
		}
	} else {
		name = "delete"
		if rest := removeService(r.services[s.Name], s); len(rest) > 0 {
			r.services[s.Name] = rest
		} else {
			delete(r.services, s.Name)
		}
		delete(r.expiries, key)
	}
	emit(map[string]interface{}{"event": "micro", "action": name, "service": s, "source": source})
}

func microError(format string, args ...interface{}) {
	emit(map[string]interface{}{"event": "micro-error", "error": fmt.Sprintf(format, args...)})
}

func (r *registry) notifyMsg(b []byte) {
	u, err := unmarshalUpdate(b)
	if err != nil {
		microError("bad update protobuf: %v", err)
		return
	}
	if u.Type != typeService || u.Metadata["Content-Type"] != jsonType {
		microError("ignored update: type %d, content type %q", u.Type, u.Metadata["Content-Type"])
		return
	}
	var s Service
	if err := json.Unmarshal(u.Data, &s); err != nil {
		microError("bad service JSON: %v", err)
		return
	}
	switch u.Action {
	case actionCreate, actionDelete:
		r.apply(u.Action, u.Expires, &s, "remote")
	default:
		microError("ignored update: action %d", u.Action)
	}
}

func (r *registry) localState(join bool) []byte {
	if !join {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	b, _ := json.Marshal(r.services)
	return b
}

func (r *registry) mergeRemoteState(buf []byte, join bool) {
	if !join || len(buf) == 0 {
		return
	}
	var m map[string][]*Service
	if err := json.Unmarshal(buf, &m); err != nil {
		microError("bad remote state: %v", err)
		return
	}
	for _, list := range m {
		for _, s := range list {
			if s != nil {
				r.apply(actionCreate, 0, s, "state")
			}
		}
	}
}

func (r *registry) expiryLoop() {
	for range time.Tick(time.Second) {
		now := uint64(time.Now().UnixNano())
		var gone []*Service
		r.mu.Lock()
		for _, e := range r.expiries {
			if e.expires < now {
				gone = append(gone, e.svc)
			}
		}
		r.mu.Unlock()
		for _, s := range gone {
			r.apply(actionDelete, 0, s, "expiry")
		}
	}
}

func (r *registry) command(c *command, answer func(map[string]interface{})) error {
	if c.Cmd == "list" {
		r.mu.Lock()
		b, _ := json.Marshal(r.services)
		r.mu.Unlock()
		answer(map[string]interface{}{"event": "services", "services": json.RawMessage(b)})
		return nil
	}
	if c.Service == nil {
		return fmt.Errorf("%s needs a service", c.Cmd)
	}
	data, err := json.Marshal(c.Service)
	if err != nil {
		return err
	}
	u := &update{Type: typeService, Action: actionDelete, Metadata: map[string]string{"Content-Type": jsonType},
		Data: data}
	if c.Cmd == "register" {
		if c.TTLMs == 0 && !r.pushPull {
			return fmt.Errorf("Require register TTL or interval for memberlist.Config")
		}
		u.Action = actionCreate
		u.Expires = uint64(time.Now().Add(time.Duration(c.TTLMs) * time.Millisecond).UnixNano())
	}
	r.queue.QueueBroadcast(&uniqueBroadcast{msg: u.marshal()})
	r.apply(u.Action, u.Expires, c.Service, "local")
	return nil
}
