"""What the tests share: fakes, servers, processes and waiting with a deadline."""
