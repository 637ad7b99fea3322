"""Operations tooling behind the command line: deploying (:mod:`.deploy`) and packaging
(:mod:`.package`) the stack, MQTT tokens (:mod:`.token_cli`), several worker processes
(:mod:`.workers`), systemd's notifications (:mod:`.systemd`) and the scheduled garbage
collection (:mod:`.gc_schedule`)."""
