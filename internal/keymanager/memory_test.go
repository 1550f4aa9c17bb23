package keymanager_test

import (
	"testing"

	"github.com/bulwarkmesh/bulwark/internal/keymanager"
	"github.com/bulwarkmesh/bulwark/internal/keymanager/keymanagertest"
)

func TestMemory(t *testing.T) {
	keymanagertest.Run(t, func(*testing.T) keymanager.KeyManager {
		return keymanager.NewMemory()
	})
}
