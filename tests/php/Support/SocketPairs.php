<?php

namespace Forklift\Tests\Support;

/** For tests that talk to their jobs over socket pairs: made on demand, closed after each test. */
trait SocketPairs
{
    /** @var list<resource> */
    private array $sockets = [];

    /** @return array{0: resource, 1: resource} */
    private function socketPair(): array
    {
        $pair = stream_socket_pair(STREAM_PF_UNIX, STREAM_SOCK_STREAM, STREAM_IPPROTO_IP);
        $this->assertIsArray($pair);
        array_push($this->sockets, ...$pair);
        return $pair;
    }

    private function closeSocketPairs(): void
    {
        foreach ($this->sockets as $s) {
            if (is_resource($s)) {
                fclose($s);
            }
        }
        $this->sockets = [];
    }
}
