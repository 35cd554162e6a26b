package clone

import (
	"fmt"
	"regexp"
	"sync"
	"time"

	"github.com/clonebot/clonebot/api"
)

var opIDRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{7,63}$`)

// ValidOperationID reports whether id can name an operation.
func ValidOperationID(id string) error {
	if opIDRE.MatchString(id) {
		return nil
	}
	return fmt.Errorf("operation %q: use 8 to 64 of a-z, 0-9 and '-'", id)
}

// maxOpEvents bounds the history an operation keeps.
const maxOpEvents = 256

// opRetention is how long a finished operation's events stay readable.
const opRetention = 5 * time.Minute

// operation is a long-running request whose phases are recorded and
// streamed to subscribers as they happen.
type operation struct {
	id, kind string
	owner    int // uid of the caller that started it
	start    time.Time

	mu      sync.Mutex
	events  []api.Event
	subs    map[chan api.Event]struct{}
	done    bool
	cloneID string
}

// ops holds the operations the daemon knows.
type ops struct {
	mu sync.Mutex
	m  map[string]*operation
}

// begin registers an operation; id "" gets a generated one. A live
// operation with the same id is a conflict.
func (o *ops) begin(id, kind string, owner int) (*operation, error) {
	if id == "" {
		id = kind + "-" + newID()
	} else if err := ValidOperationID(id); err != nil {
		return nil, err
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.m == nil {
		o.m = map[string]*operation{}
	}
	if cur, ok := o.m[id]; ok {
		cur.mu.Lock()
		done := cur.done
		cur.mu.Unlock()
		if !done {
			return nil, fmt.Errorf("operation %s is already running", id)
		}
	}
	op := &operation{id: id, kind: kind, owner: owner, start: time.Now(), subs: map[chan api.Event]struct{}{}}
	o.m[id] = op
	return op, nil
}

func (o *ops) get(id string) (*operation, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	op, ok := o.m[id]
	return op, ok
}

// finish marks op done and forgets it after opRetention.
func (o *ops) finish(op *operation) {
	op.mu.Lock()
	op.done = true
	for ch := range op.subs {
		close(ch)
	}
	op.subs = nil
	op.mu.Unlock()
	time.AfterFunc(opRetention, func() {
		o.mu.Lock()
		if o.m[op.id] == op {
			delete(o.m, op.id)
		}
		o.mu.Unlock()
	})
}

// emit records an event and sends it to subscribers that keep up; a slow
// subscriber misses events rather than slowing the operation.
func (op *operation) emit(phase, state string, bytes int64, msg string) {
	if op == nil {
		return
	}
	op.mu.Lock()
	defer op.mu.Unlock()
	ev := api.Event{Time: time.Now().UTC(), Operation: op.id, Kind: op.kind, Phase: phase, State: state,
		ElapsedMS: ms(time.Since(op.start)), Bytes: bytes, Message: msg, CloneID: op.cloneID}
	if len(op.events) < maxOpEvents {
		op.events = append(op.events, ev)
	}
	for ch := range op.subs {
		select {
		case ch <- ev:
		default:
		}
	}
}

func (op *operation) setClone(id string) {
	if op == nil {
		return
	}
	op.mu.Lock()
	op.cloneID = id
	op.mu.Unlock()
}

// subscribe returns the events so far and a channel of the next ones,
// closed when the operation ends; cancel stops the subscription.
func (op *operation) subscribe() (past []api.Event, next <-chan api.Event, cancel func()) {
	op.mu.Lock()
	defer op.mu.Unlock()
	past = append(past, op.events...)
	ch := make(chan api.Event, 64)
	if op.done {
		close(ch)
		return past, ch, func() {}
	}
	op.subs[ch] = struct{}{}
	return past, ch, func() {
		op.mu.Lock()
		if _, ok := op.subs[ch]; ok {
			delete(op.subs, ch)
			close(ch)
		}
		op.mu.Unlock()
	}
}

// phase emits start, runs f, and emits done or failed with its error.
func (op *operation) phase(name string, f func() error) error {
	op.emit(name, api.EventStart, 0, "")
	err := f()
	if err != nil {
		op.emit(name, api.EventFailed, 0, err.Error())
	} else {
		op.emit(name, api.EventDone, 0, "")
	}
	return err
}
