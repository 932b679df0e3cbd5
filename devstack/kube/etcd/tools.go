//go:build tools

// Package tools pins the etcd server this module builds (its own go.mod's replace directives point
// into the etcd source tree, so `go install` refuses it; a wrapper takes the published modules).
package tools

import _ "go.etcd.io/etcd/server/v3"
