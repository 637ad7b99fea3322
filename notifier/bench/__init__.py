"""``notifier bench``: the daemon under load, completed by MQTT and by polling, measured.

``run`` orchestrates (stack, backends, daemons, modes), ``daemon_process`` runs a daemon in
a process of its own so that its CPU time and memory are its own, ``load`` is the HTTP
load generator, ``report`` turns samples into figures, a table, JSON and a plot.
"""
