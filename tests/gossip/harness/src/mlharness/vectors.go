package main

// `mlharness vectors`: golden wire vectors produced by Go itself (go-msgpack codec with a default
// MsgpackHandle as memberlist's unexported encode uses, compress/lzw, crc32, crypto/cipher AES-GCM with
// fixed nonces, the go-micro Update protobuf and encoding/json). Output is deterministic.

import (
	"bytes"
	"compress/lzw"
	"crypto/aes"
	"crypto/cipher"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"os"
	"reflect"
	"strings"

	"github.com/hashicorp/go-msgpack/codec"
)

// Mirrors of memberlist 0.2.2's message structs (same names, types, order and tags).
type nodeStateType int
type compressionType int

type ping struct {
	SeqNo      uint32
	Node       string
	SourceAddr []byte `codec:",omitempty"`
	SourcePort uint16 `codec:",omitempty"`
	SourceNode string `codec:",omitempty"`
}
type indirectPingReq struct {
	SeqNo      uint32
	Target     []byte
	Port       uint16
	Node       string
	Nack       bool
	SourceAddr []byte `codec:",omitempty"`
	SourcePort uint16 `codec:",omitempty"`
	SourceNode string `codec:",omitempty"`
}
type ackResp struct {
	SeqNo   uint32
	Payload []byte
}
type nackResp struct{ SeqNo uint32 }
type errResp struct{ Error string }
type suspect struct {
	Incarnation uint32
	Node        string
	From        string
}
type alive struct {
	Incarnation uint32
	Node        string
	Addr        []byte
	Port        uint16
	Meta        []byte
	Vsn         []uint8
}
type dead struct {
	Incarnation uint32
	Node        string
	From        string
}
type pushPullHeader struct {
	Nodes        int
	UserStateLen int
	Join         bool
}
type userMsgHeader struct{ UserMsgLen int }
type pushNodeState struct {
	Name        string
	Addr        []byte
	Port        uint16
	Meta        []byte
	Incarnation uint32
	State       nodeStateType
	Vsn         []uint8
}
type compress struct {
	Algo compressionType
	Buf  []byte
}

type vec map[string]interface{}

var (
	ip4     = []byte{127, 0, 0, 1}
	ip16    = []byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 0, 0, 2}
	vsn2    = []uint8{1, 5, 2, 0, 0, 0}
	vsn4    = []uint8{1, 5, 4, 0, 0, 0}
	maxU32  = uint32(0xFFFFFFFF)
	longStr = strings.Repeat("n", 40)
)

func mp(typ int, v interface{}) []byte {
	var buf bytes.Buffer
	if typ >= 0 {
		buf.WriteByte(byte(typ))
	}
	if err := codec.NewEncoder(&buf, &codec.MsgpackHandle{}).Encode(v); err != nil {
		panic(err)
	}
	return buf.Bytes()
}

// fields lists a struct's Go fields for JSON; []byte values are hex strings, nil slices are null.
func fields(v interface{}) (map[string]interface{}, []string) {
	rv := reflect.ValueOf(v).Elem()
	out, bytesFields := map[string]interface{}{}, []string{}
	for i := 0; i < rv.NumField(); i++ {
		f, name := rv.Field(i), rv.Type().Field(i).Name
		if b, ok := f.Interface().([]byte); ok {
			bytesFields = append(bytesFields, name)
			if b == nil {
				out[name] = nil
			} else {
				out[name] = hex.EncodeToString(b)
			}
			continue
		}
		out[name] = f.Interface()
	}
	return out, bytesFields
}

func msgVec(name, kind string, typ int, v interface{}) vec {
	f, bf := fields(v)
	tb := interface{}(nil)
	if typ >= 0 {
		tb = typ
	}
	return vec{"name": name, "struct": kind, "type_byte": tb, "fields": f, "bytes_fields": bf,
		"hex": hex.EncodeToString(mp(typ, v))}
}

func lzwCompress(in []byte) []byte {
	var buf bytes.Buffer
	w := lzw.NewWriter(&buf, lzw.LSB, 8)
	w.Write(in)
	w.Close()
	return buf.Bytes()
}

func compressMsg(in []byte) []byte { return mp(9, &compress{Algo: 0, Buf: lzwCompress(in)}) }

func compound(parts [][]byte) []byte {
	b := []byte{7, byte(len(parts))}
	for _, p := range parts {
		b = binary.BigEndian.AppendUint16(b, uint16(len(p)))
	}
	for _, p := range parts {
		b = append(b, p...)
	}
	return b
}

func withCRC(b []byte) []byte {
	return append(binary.BigEndian.AppendUint32([]byte{12}, crc32.ChecksumIEEE(b)), b...)
}

// seal builds [version][nonce][GCM(ciphertext||tag)]; version 0 PKCS#7-pads the plaintext first.
func seal(version int, key, nonce, pt, aad []byte) []byte {
	block, err := aes.NewCipher(key)
	if err != nil {
		panic(err)
	}
	gcm, _ := cipher.NewGCM(block)
	if version == 0 {
		pad := 16 - len(pt)%16
		pt = append(append([]byte(nil), pt...), bytes.Repeat([]byte{byte(pad)}, pad)...)
	}
	return gcm.Seal(append([]byte{byte(version)}, nonce...), nonce, pt, aad)
}

// tcpSeal builds [10][u32 BE blob length][blob] with aad = the 5 header bytes.
func tcpSeal(version int, key, nonce, pt []byte) []byte {
	n := 1 + 12 + len(pt) + 16
	if version == 0 {
		n += 16 - len(pt)%16
	}
	hdr := binary.BigEndian.AppendUint32([]byte{10}, uint32(n))
	return append(hdr, seal(version, key, nonce, pt, hdr)...)
}

func allBytes() []byte {
	b := make([]byte, 256)
	for i := range b {
		b[i] = byte(i)
	}
	return b
}

// pseudo returns deterministic pseudo-random bytes (xorshift32) drawn from an alphabet of size mod.
func pseudo(n int, seed uint32, mod int) []byte {
	out := make([]byte, n)
	for i := range out {
		seed ^= seed << 13
		seed ^= seed >> 17
		seed ^= seed << 5
		out[i] = byte(int(seed>>8) % mod)
	}
	return out
}

func messageVectors() []vec {
	meta512 := bytes.Repeat([]byte("m"), 512)
	return []vec{
		msgVec("ping_basic", "ping", 0, &ping{SeqNo: 1, Node: "py1"}),
		msgVec("ping_source4", "ping", 0, &ping{SeqNo: 7, Node: "go1", SourceAddr: ip4, SourcePort: 17946, SourceNode: "py1"}),
		msgVec("ping_source16_max", "ping", 0, &ping{SeqNo: maxU32, Node: longStr, SourceAddr: ip16, SourcePort: 65535, SourceNode: "src"}),
		msgVec("ping_zero", "ping", 0, &ping{}),
		msgVec("ping_source_empty_slice", "ping", 0, &ping{SeqNo: 2, Node: "a", SourceAddr: []byte{}}),
		msgVec("indirect_nack", "indirectPingReq", 1, &indirectPingReq{SeqNo: 300, Target: ip4, Port: 7946, Node: "go2", Nack: true, SourceAddr: ip4, SourcePort: 40000, SourceNode: "py1"}),
		msgVec("indirect_16", "indirectPingReq", 1, &indirectPingReq{SeqNo: 70000, Target: ip16, Port: 1, Node: "go2"}),
		msgVec("indirect_nil_target", "indirectPingReq", 1, &indirectPingReq{SeqNo: 1, Node: "x"}),
		msgVec("ack_nil_payload", "ackResp", 2, &ackResp{SeqNo: 1}),
		msgVec("ack_empty_payload", "ackResp", 2, &ackResp{SeqNo: 1, Payload: []byte{}}),
		msgVec("ack_payload", "ackResp", 2, &ackResp{SeqNo: 65536, Payload: []byte("hello")}),
		msgVec("ack_payload_str16", "ackResp", 2, &ackResp{SeqNo: maxU32, Payload: pseudo(300, 7, 256)}),
		msgVec("nack", "nackResp", 11, &nackResp{SeqNo: 5}),
		msgVec("nack_max", "nackResp", 11, &nackResp{SeqNo: maxU32}),
		msgVec("err", "errResp", 13, &errResp{Error: "boom"}),
		msgVec("err_empty", "errResp", 13, &errResp{}),
		msgVec("err_long", "errResp", 13, &errResp{Error: "Encryption is configured but remote state is not encrypted"}),
		msgVec("suspect", "suspect", 3, &suspect{Incarnation: 3, Node: "go1", From: "py1"}),
		msgVec("dead_leave", "dead", 5, &dead{Incarnation: 1, Node: "go1", From: "go1"}),
		msgVec("dead_max", "dead", 5, &dead{Incarnation: maxU32, Node: "go1", From: "py2"}),
		msgVec("alive_basic", "alive", 4, &alive{Incarnation: 1, Node: "go1", Addr: ip4, Port: 17946, Meta: []byte("meta-go1"), Vsn: vsn2}),
		msgVec("alive_16_nil_meta", "alive", 4, &alive{Incarnation: 2, Node: "go2", Addr: ip16, Port: 7946, Vsn: vsn4}),
		msgVec("alive_empty_meta", "alive", 4, &alive{Incarnation: 3, Node: "go3", Addr: ip4, Port: 1, Meta: []byte{}, Vsn: vsn2}),
		msgVec("alive_meta512_max", "alive", 4, &alive{Incarnation: maxU32, Node: longStr, Addr: ip4, Port: 65535, Meta: meta512, Vsn: vsn2}),
		msgVec("alive_name300_utf8", "alive", 4, &alive{Incarnation: 1, Node: "nöde-é" + strings.Repeat("x", 292), Addr: ip4, Port: 2, Vsn: vsn2}),
		msgVec("alive_nil_vsn_port0", "alive", 4, &alive{Incarnation: 0, Node: "old", Addr: ip4}),
		msgVec("compress", "compress", 9, &compress{Algo: 0, Buf: []byte("abc")}),
		msgVec("push_pull_header_join", "pushPullHeader", -1, &pushPullHeader{Nodes: 3, Join: true}),
		msgVec("push_pull_header_large", "pushPullHeader", -1, &pushPullHeader{Nodes: 70000, UserStateLen: 1 << 33}),
		msgVec("push_node_state_alive", "pushNodeState", -1, &pushNodeState{Name: "go1", Addr: ip4, Port: 17946, Meta: []byte("m"), Incarnation: 4, State: 0, Vsn: vsn2}),
		msgVec("push_node_state_left16", "pushNodeState", -1, &pushNodeState{Name: "go2", Addr: ip16, Port: 7946, Incarnation: maxU32, State: 3, Vsn: vsn4}),
		msgVec("user_msg_header", "userMsgHeader", -1, &userMsgHeader{UserMsgLen: 5}),
		msgVec("user_msg_header_large", "userMsgHeader", -1, &userMsgHeader{UserMsgLen: 70000}),
	}
}

func lzwVectors() []vec {
	inputs := []struct {
		name string
		data []byte
	}{
		{"empty", []byte{}}, {"one", []byte("a")}, {"tobeornot", []byte("TOBEORNOTTOBEORTOBEORNOT")},
		{"all_bytes", allBytes()}, {"repeat_text", []byte(strings.Repeat("hello memberlist ", 60))},
		{"zeros_5000", make([]byte, 5000)}, {"random_10000_reset", pseudo(10000, 12345, 256)},
		{"alphabet4_6000", pseudo(6000, 999, 4)},
	}
	var out []vec
	for _, in := range inputs {
		out = append(out, vec{"name": in.name, "input_hex": hex.EncodeToString(in.data),
			"hex": hex.EncodeToString(lzwCompress(in.data))})
	}
	return out
}

func framingVectors() []vec {
	parts := [][]byte{mp(0, &ping{SeqNo: 1, Node: "py1"}),
		mp(4, &alive{Incarnation: 1, Node: "go1", Addr: ip4, Port: 17946, Meta: []byte("meta-go1"), Vsn: vsn2}),
		append([]byte{8}, "user-payload"...)}
	var ph []string
	for _, p := range parts {
		ph = append(ph, hex.EncodeToString(p))
	}
	c := compound(parts)
	rep := compound([][]byte{parts[1], parts[1], parts[1]})
	key := []byte("micro-gossip-key")
	nonce := []byte("fixednonce01")
	return []vec{
		{"name": "compound_3", "parts_hex": ph, "hex": hex.EncodeToString(c)},
		{"name": "crc_compound", "input_hex": hex.EncodeToString(c), "hex": hex.EncodeToString(withCRC(c))},
		{"name": "crc_ping", "input_hex": ph[0], "hex": hex.EncodeToString(withCRC(parts[0]))},
		{"name": "compress_message_compound", "input_hex": hex.EncodeToString(c), "hex": hex.EncodeToString(compressMsg(c))},
		{"name": "compress_message_repetitive", "input_hex": hex.EncodeToString(rep), "hex": hex.EncodeToString(compressMsg(rep))},
		// UDP packet as rawSendMsgPacket builds it: compress (smaller here) -> CRC -> encrypt v1, aad empty.
		{"name": "udp_compress_crc_encrypt", "input_hex": hex.EncodeToString(rep), "key_hex": hex.EncodeToString(key),
			"nonce_hex": hex.EncodeToString(nonce), "version": 1,
			"hex": hex.EncodeToString(seal(1, key, nonce, withCRC(compressMsg(rep)), nil))},
	}
}

func aesVectors() []vec {
	keys := [][]byte{[]byte("micro-gossip-key"), []byte("0123456789abcdef01234567"),
		[]byte("an-aes-256-key-of-32-bytes-long!")}
	pt := mp(0, &ping{SeqNo: 9, Node: "go1"})
	block16 := []byte("exactly16bytes!!")
	var out []vec
	for _, key := range keys {
		for _, version := range []int{0, 1} {
			for _, form := range []string{"udp", "tcp"} {
				nonce := []byte{byte(len(key)), byte(version), 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}
				if form == "tcp" {
					nonce[2] = 0x54
				}
				for _, p := range [][]byte{pt, block16} {
					if len(p) == 16 && len(key) != 16 {
						continue
					}
					blob, aad := seal(version, key, nonce, p, nil), ""
					if form == "tcp" {
						blob = tcpSeal(version, key, nonce, p)
						aad = hex.EncodeToString(blob[:5])
					}
					out = append(out, vec{"name": fmt.Sprintf("aes_%s_v%d_key%d_pt%d", form, version, len(key), len(p)),
						"form": form, "version": version, "key_hex": hex.EncodeToString(key),
						"nonce_hex": hex.EncodeToString(nonce), "plaintext_hex": hex.EncodeToString(p),
						"aad_hex": aad, "hex": hex.EncodeToString(blob)})
				}
			}
		}
	}
	return out
}

func streamVectors(userState []byte) []vec {
	states := []*pushNodeState{
		{Name: "go1", Addr: ip4, Port: 17946, Meta: []byte("meta-go1"), Incarnation: 1, State: 0, Vsn: vsn4},
		{Name: "go2", Addr: ip16, Port: 7946, Incarnation: 5, State: 1, Vsn: vsn4},
	}
	// build encodes like sendLocalState: one encoder for header and states, then the raw user state.
	build := func(name string, join bool, us []byte) ([]byte, vec) {
		var buf bytes.Buffer
		buf.WriteByte(6)
		enc := codec.NewEncoder(&buf, &codec.MsgpackHandle{})
		hdr := &pushPullHeader{Nodes: len(states), UserStateLen: len(us), Join: join}
		enc.Encode(hdr)
		var sf []interface{}
		for _, s := range states {
			enc.Encode(s)
			f, _ := fields(s)
			sf = append(sf, f)
		}
		buf.Write(us)
		hf, _ := fields(hdr)
		return buf.Bytes(), vec{"name": name, "header": hf, "states": sf, "user_state_hex": hex.EncodeToString(us),
			"plain_hex": hex.EncodeToString(buf.Bytes()), "hex": hex.EncodeToString(buf.Bytes())}
	}
	plain, v1 := build("push_pull_join_user_state", true, userState)
	_, v2 := build("push_pull_no_user_state", false, nil)
	_, v3 := build("push_pull_compressed", true, userState)
	v3["hex"] = hex.EncodeToString(compressMsg(plain))
	key, nonce := []byte("micro-gossip-key"), []byte("streamnonce1")
	_, v4 := build("push_pull_compressed_encrypted", true, userState)
	v4["key_hex"], v4["nonce_hex"], v4["version"] = hex.EncodeToString(key), hex.EncodeToString(nonce), 1
	v4["hex"] = hex.EncodeToString(tcpSeal(1, key, nonce, compressMsg(plain)))
	userStream := append(mp(8, &userMsgHeader{UserMsgLen: 7}), "payload"...)
	return []vec{v1, v2, v3, v4, {"name": "user_stream", "payload_hex": hex.EncodeToString([]byte("payload")),
		"hex": hex.EncodeToString(userStream)}}
}

func microVectors() ([]vec, []byte) {
	a := &Service{Name: "go.a", Version: "1.0.0", Metadata: map[string]string{"k": "v"},
		Nodes: []*MicroNode{{Id: "go.a-node1", Address: "10.0.0.1:8080", Metadata: map[string]string{"proto": "grpc"}}}}
	b1 := &Service{Name: "go.b", Version: "v1", Endpoints: []*Endpoint{{Name: "B.Call",
		Request:  &Value{Name: "Request", Type: "Request", Values: []*Value{{Name: "id", Type: "string"}}},
		Response: &Value{Name: "Response", Type: "Response"}, Metadata: map[string]string{"stream": "false"}}},
		Nodes: []*MicroNode{{Id: "b-1", Address: "127.0.0.1:9000"}, {Id: "b-2", Address: "[::1]:9001", Metadata: map[string]string{}}}}
	b2 := &Service{Name: "go.b", Version: "v2", Metadata: map[string]string{}, Endpoints: []*Endpoint{}, Nodes: []*MicroNode{}}
	html := &Service{Name: "go.h", Version: "1", Metadata: map[string]string{"q": "a<b && c>d", "u": "é"}}
	js := func(s interface{}) []byte { b, _ := json.Marshal(s); return b }
	svcVec := func(name string, s *Service) vec {
		return vec{"name": name, "service": s, "json": string(js(s)), "hex": hex.EncodeToString(js(s))}
	}
	state := js(map[string][]*Service{"go.a": {a}, "go.b": {b1, b2}})
	meta := map[string]string{"Content-Type": jsonType}
	create := &update{Expires: 1700000000123456789, Type: typeService, Action: actionCreate, Metadata: meta, Data: js(a)}
	del := &update{Type: typeService, Action: actionDelete, Metadata: meta, Data: js(a)}
	updVec := func(name string, u *update) vec {
		return vec{"name": name, "expires": u.Expires, "type": u.Type, "action": u.Action, "metadata": u.Metadata,
			"data_hex": hex.EncodeToString(u.Data), "hex": hex.EncodeToString(u.marshal())}
	}
	return []vec{
		updVec("update_create", create), updVec("update_delete", del),
		svcVec("service_null_endpoints", a), svcVec("service_endpoints_values", b1),
		svcVec("service_empty_collections", b2), svcVec("service_html_escaped", html),
		{"name": "local_state", "services": map[string][]*Service{"go.a": {a}, "go.b": {b1, b2}},
			"json": string(state), "hex": hex.EncodeToString(state)},
	}, state
}

func printVectors() {
	micro, state := microVectors()
	doc := map[string]interface{}{
		"_doc": "Generated by `mlharness vectors` (Go " + "go-msgpack 0.5.5 / memberlist 0.2.2 semantics). " +
			"hex = exact bytes. messages: struct fields by Go name, bytes_fields are hex strings (null = Go nil " +
			"slice), type_byte null = bare msgpack map (encode_struct). lzw: Go compress/lzw LSB 8. aes: " +
			"[version][nonce][ct||tag]; tcp form is [10][u32 len][blob] with aad = those 5 bytes. streams: " +
			"push/pull [6][header][states][user_state], compressed = [9][msgpack compress], plain_hex = before " +
			"compression/encryption. micro: go-micro Update protobuf and Service JSON (Go encoding/json).",
		"messages": messageVectors(), "lzw": lzwVectors(), "framing": framingVectors(), "aes": aesVectors(),
		"streams": streamVectors(state), "micro": micro,
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", " ")
	if err := enc.Encode(doc); err != nil {
		panic(err)
	}
}
