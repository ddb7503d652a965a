// tlogcheck: an independent verifier for the broker's transparency log, built on the
// Go checksum database's packages (golang.org/x/mod/sumdb/note and .../tlog, from
// Debian). It reads one JSON request per line on stdin and answers one JSON line each:
//
//	{"op":"note","vkey":V,"note":N}              -> {"ok":true,"text":T} (note.Open)
//	{"op":"inclusion","index":I,"size":N,"root":R,"leaf":L,"proof":[...]}
//	                                             -> {"ok":true} (tlog.CheckRecord)
//	{"op":"consistency","size1":M,"size2":N,"root1":R1,"root2":R2,"proof":[...]}
//	                                             -> {"ok":true} (tlog.CheckTree)
//	{"op":"record_hash","data":D}                -> {"ok":true,"hash":H} (tlog.RecordHash)
//
// Hashes and data are standard base64. A refusal is {"ok":false,"error":E}.
package main

import (
	"bufio"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

type request struct {
	Op    string   `json:"op"`
	Vkey  string   `json:"vkey"`
	Note  string   `json:"note"`
	Index int64    `json:"index"`
	Size  int64    `json:"size"`
	Root  string   `json:"root"`
	Leaf  string   `json:"leaf"`
	Proof []string `json:"proof"`
	Size1 int64    `json:"size1"`
	Size2 int64    `json:"size2"`
	Root1 string   `json:"root1"`
	Root2 string   `json:"root2"`
	Data  string   `json:"data"`
}

type answer struct {
	Ok    bool   `json:"ok"`
	Error string `json:"error,omitempty"`
	Text  string `json:"text,omitempty"`
	Hash  string `json:"hash,omitempty"`
}

func hash(s string) (tlog.Hash, error) {
	var h tlog.Hash
	raw, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return h, err
	}
	if len(raw) != tlog.HashSize {
		return h, fmt.Errorf("hash of %d bytes", len(raw))
	}
	copy(h[:], raw)
	return h, nil
}

func hashes(list []string) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, 0, len(list))
	for _, s := range list {
		h, err := hash(s)
		if err != nil {
			return nil, err
		}
		out = append(out, h)
	}
	return out, nil
}

func serve(r request) answer {
	switch r.Op {
	case "note":
		v, err := note.NewVerifier(r.Vkey)
		if err != nil {
			return answer{Error: "verifier key: " + err.Error()}
		}
		n, err := note.Open([]byte(r.Note), note.VerifierList(v))
		if err != nil {
			return answer{Error: err.Error()}
		}
		return answer{Ok: true, Text: n.Text}
	case "inclusion":
		root, err := hash(r.Root)
		if err != nil {
			return answer{Error: "root: " + err.Error()}
		}
		leaf, err := hash(r.Leaf)
		if err != nil {
			return answer{Error: "leaf: " + err.Error()}
		}
		proof, err := hashes(r.Proof)
		if err != nil {
			return answer{Error: "proof: " + err.Error()}
		}
		if err := tlog.CheckRecord(tlog.RecordProof(proof), r.Size, root, r.Index, leaf); err != nil {
			return answer{Error: err.Error()}
		}
		return answer{Ok: true}
	case "consistency":
		r1, err := hash(r.Root1)
		if err != nil {
			return answer{Error: "root1: " + err.Error()}
		}
		r2, err := hash(r.Root2)
		if err != nil {
			return answer{Error: "root2: " + err.Error()}
		}
		proof, err := hashes(r.Proof)
		if err != nil {
			return answer{Error: "proof: " + err.Error()}
		}
		if err := tlog.CheckTree(tlog.TreeProof(proof), r.Size2, r2, r.Size1, r1); err != nil {
			return answer{Error: err.Error()}
		}
		return answer{Ok: true}
	case "record_hash":
		data, err := base64.StdEncoding.DecodeString(r.Data)
		if err != nil {
			return answer{Error: "data: " + err.Error()}
		}
		h := tlog.RecordHash(data)
		return answer{Ok: true, Hash: base64.StdEncoding.EncodeToString(h[:])}
	}
	return answer{Error: "unknown op " + r.Op}
}

func main() {
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 64<<20)
	out := json.NewEncoder(os.Stdout)
	for in.Scan() {
		var r request
		if err := json.Unmarshal(in.Bytes(), &r); err != nil {
			_ = out.Encode(answer{Error: "request: " + err.Error()})
			continue
		}
		_ = out.Encode(serve(r))
	}
}
