package main

// memberlist 0.2.2 never fills the exported Node.State (it is shadowed by the unexported nodeState.State),
// so the harness reads the real state and incarnation from memberlist's internal nodeState records. This
// is only done after checking, through reflection, that the unexported layout is exactly mirrorState;
// otherwise states fall back to Node.State and incarnations to 0 (the "ready" event says which).

import (
	"reflect"
	"sync"
	"time"
	"unsafe"

	"github.com/hashicorp/memberlist"
)

type mirrorState struct {
	memberlist.Node
	Incarnation uint32
	State       memberlist.NodeStateType
	StateChange time.Time
}

var internalStates = checkLayout()

func checkLayout() bool {
	mt := reflect.TypeOf((*memberlist.Memberlist)(nil)).Elem()
	lock, ok1 := mt.FieldByName("nodeLock")
	nodes, ok2 := mt.FieldByName("nodes")
	if !ok1 || !ok2 || lock.Type != reflect.TypeOf(sync.RWMutex{}) || nodes.Type.Kind() != reflect.Slice ||
		nodes.Type.Elem().Kind() != reflect.Ptr {
		return false
	}
	st, want := nodes.Type.Elem().Elem(), reflect.TypeOf(mirrorState{})
	if st.Kind() != reflect.Struct || st.NumField() != want.NumField() || st.Size() != want.Size() {
		return false
	}
	for i := 0; i < st.NumField(); i++ {
		a, b := st.Field(i), want.Field(i)
		if a.Name != b.Name || a.Offset != b.Offset || a.Type != b.Type {
			return false
		}
	}
	return true
}

// stateOf gives the state and incarnation of a node pointer handed out by memberlist (event callbacks,
// Members, LocalNode): those always point at the Node embedded first in a nodeState.
func stateOf(n *memberlist.Node) (int, uint32) {
	if !internalStates {
		return int(n.State), 0
	}
	ms := (*mirrorState)(unsafe.Pointer(n))
	return int(ms.State), ms.Incarnation
}

// memberList describes the known nodes under memberlist's node lock; dead and left nodes only if all.
func memberList(ml *memberlist.Memberlist, all bool) []map[string]interface{} {
	out := []map[string]interface{}{}
	describe := func(n *memberlist.Node, state int, inc uint32) {
		out = append(out, map[string]interface{}{"name": n.Name, "addr": n.Addr.String(), "port": n.Port,
			"state": state, "incarnation": inc, "meta": string(n.Meta),
			"vsn": []int{int(n.PMin), int(n.PMax), int(n.PCur), int(n.DMin), int(n.DMax), int(n.DCur)}})
	}
	if !internalStates {
		for _, n := range ml.Members() {
			describe(n, int(n.State), 0)
		}
		return out
	}
	v := reflect.ValueOf(ml).Elem()
	lock := (*sync.RWMutex)(unsafe.Pointer(v.FieldByName("nodeLock").UnsafeAddr()))
	nodes := (*[]*mirrorState)(unsafe.Pointer(v.FieldByName("nodes").UnsafeAddr()))
	lock.RLock()
	defer lock.RUnlock()
	for _, n := range *nodes {
		if all || (n.State != memberlist.StateDead && n.State != memberlist.StateLeft) {
			describe(&n.Node, int(n.State), n.Incarnation)
		}
	}
	return out
}
