# The real BEAM side of nodelab's benchmark: what nodelab is measured against.
#
# One file, two roles, so that both nodes compile the very same module. A fun made inside
# NodelabBench on the driver node travels to the peer as a *reference* (module, index,
# md5), and the peer can run it because it compiled the same NodelabBench from the same
# source. (A fun from a module only one node has fails remotely with :undef; see
# BASELINES.md.)
#
#   elixir --sname kate@localhost --cookie C bench.exs peer LIFETIME_MS
#   elixir --sname alex@localhost --cookie C bench.exs driver kate@localhost \
#          ROUNDS N_RTT N_MSGS N_SPAWN N_TASK
#
# The driver prints one line per measurement, `BENCH {json}`, that benchmarks/run.py
# parses; a failure prints `BENCH-ERROR reason` and halts with status 1. Everything is
# bounded: every receive has a timeout, and the peer halts when its stdin closes (the
# Python driver holds it) or when its lifetime is over.

defmodule NodelabBench do
  @reply_timeout 10_000

  # ---------------------------------------------------------------- peer (kate's role)

  def peer(lifetime_ms) do
    {:ok, _} = Task.Supervisor.start_link(name: Bench.TaskSupervisor)
    Process.register(spawn(&echo/0), :bench_echo)

    # The driver (Python) holds our stdin; when it closes it or dies, we go too.
    spawn(fn ->
      _ = IO.read(:stdio, :line)
      System.halt(0)
    end)

    IO.puts("READY #{node()}")
    Process.sleep(lifetime_ms)
    IO.puts(:stderr, "peer: lifetime of #{lifetime_ms} ms is over, halting")
    System.halt(3)
  end

  def echo do
    receive do
      {from, msg} -> send(from, msg)
    end

    echo()
  end

  def counter(n, driver) do
    send(driver, :counter_ready)
    count(n)
    send(driver, :done)
  end

  # nodelab<->BEAM, the BEAM pinging (run.py spawns this on the peer from a nodelab node):
  # n round trips {self(), :ping} -> target (a nodelab echo process) -> :ping, then
  # {:pinger_samples, [nanoseconds]} to reply_to. Never halts the peer: a lost reply exits.
  def pinger(target, n, reply_to) do
    send(reply_to, {:pinger_samples, pinger_loop(target, n, [])})
  end

  defp pinger_loop(_target, 0, acc) do
    Enum.map(acc, &System.convert_time_unit(&1, :native, :nanosecond))
  end

  defp pinger_loop(target, n, acc) do
    t0 = System.monotonic_time()
    send(target, {self(), :ping})

    receive do
      :ping -> :ok
    after
      @reply_timeout -> exit(:pinger_timeout)
    end

    pinger_loop(target, n - 1, [System.monotonic_time() - t0 | acc])
  end

  defp count(0), do: :ok

  defp count(n) do
    receive do
      {:m, _} -> count(n - 1)
    after
      @reply_timeout -> exit(:counter_timeout)
    end
  end

  # -------------------------------------------------------------- driver (alex's role)

  def driver(peer_name, [rounds, n_rtt, n_msgs, n_spawn, n_task]) do
    peer = String.to_atom(peer_name)
    Node.connect(peer) || fail("cannot connect to #{peer} (is it up? same cookie?)")

    echo =
      :rpc.call(peer, Process, :whereis, [:bench_echo], @reply_timeout) ||
        fail("no :bench_echo on #{peer}")

    # Warm up the connection and the code paths once, outside the measurements.
    rtt_loop(echo, min(n_rtt, 2_000), [])
    spawn_loop(peer, min(n_spawn, 200), [])
    task_loop(peer, min(n_task, 200), [])

    for round <- 1..rounds do
      report("rtt", round, n_rtt, stats(rtt_loop(echo, n_rtt, [])))
    end

    for round <- 1..rounds do
      seconds = throughput(peer, n_msgs)
      line("throughput", round, n_msgs, ~s("seconds":#{num(seconds)},"msgs_per_s":#{num(n_msgs / seconds)}))
    end

    for round <- 1..rounds do
      report("spawn_reply", round, n_spawn, stats(spawn_loop(peer, n_spawn, [])))
    end

    for round <- 1..rounds do
      report("task_async_await", round, n_task, stats(task_loop(peer, n_task, [])))
    end

    IO.puts("BENCH-DONE")
    System.halt(0)
  end

  # Figure 1: send {self(), :ping} to the echo process on the peer, wait for :ping back.
  defp rtt_loop(_echo, 0, acc), do: acc

  defp rtt_loop(echo, n, acc) do
    t0 = System.monotonic_time()
    send(echo, {self(), :ping})

    receive do
      :ping -> :ok
    after
      @reply_timeout -> fail("no echo reply within #{@reply_timeout} ms")
    end

    rtt_loop(echo, n - 1, [System.monotonic_time() - t0 | acc])
  end

  # Figure 2: a counter on the peer receives n small messages, then says :done.
  # The clock runs from the first send until the :done arrived, so it covers delivery.
  defp throughput(peer, n) do
    me = self()
    pid = Node.spawn(peer, fn -> counter(n, me) end)

    receive do
      :counter_ready -> :ok
    after
      @reply_timeout -> fail("the counter on #{peer} did not start")
    end

    t0 = System.monotonic_time()
    send_many(pid, n)

    receive do
      :done -> :ok
    after
      60_000 -> fail("the counter did not get #{n} messages within 60 s")
    end

    System.convert_time_unit(System.monotonic_time() - t0, :native, :nanosecond) / 1.0e9
  end

  defp send_many(_pid, 0), do: :ok

  defp send_many(pid, n) do
    send(pid, {:m, n})
    send_many(pid, n - 1)
  end

  # Figure 3: spawn on the peer a fun that sends back to the caller.
  defp spawn_loop(_peer, 0, acc), do: acc

  defp spawn_loop(peer, n, acc) do
    me = self()
    t0 = System.monotonic_time()
    Node.spawn(peer, fn -> send(me, :spawned) end)

    receive do
      :spawned -> :ok
    after
      @reply_timeout -> fail("the spawned process did not reply")
    end

    spawn_loop(peer, n - 1, [System.monotonic_time() - t0 | acc])
  end

  # Figure 4: a supervised task on the peer, awaited here.
  defp task_loop(_peer, 0, acc), do: acc

  defp task_loop(peer, n, acc) do
    t0 = System.monotonic_time()
    :ok = Task.Supervisor.async({Bench.TaskSupervisor, peer}, fn -> :ok end) |> Task.await(@reply_timeout)
    task_loop(peer, n - 1, [System.monotonic_time() - t0 | acc])
  end

  # ---------------------------------------------------------------------- reporting

  # Percentiles exactly as benchmarks/run.py computes them: sorted[min(n - 1, floor(q * n))].
  defp stats(samples) do
    sorted = samples |> Enum.map(&System.convert_time_unit(&1, :native, :nanosecond)) |> Enum.sort()
    n = length(sorted)
    at = fn q -> Enum.at(sorted, min(n - 1, trunc(q * n))) / 1000 end
    {at.(0.5), at.(0.99)}
  end

  defp report(figure, round, n, {p50, p99}) do
    line(figure, round, n, ~s("p50_us":#{num(p50)},"p99_us":#{num(p99)}))
  end

  defp line(figure, round, n, fields) do
    IO.puts(~s(BENCH {"figure":"#{figure}","round":#{round},"n":#{n},#{fields}}))
  end

  defp num(x), do: :erlang.float_to_binary(x / 1, decimals: 3)

  defp fail(reason) do
    IO.puts("BENCH-ERROR #{reason}")
    System.halt(1)
  end
end

case System.argv() do
  ["peer", lifetime_ms] ->
    NodelabBench.peer(String.to_integer(lifetime_ms))

  ["driver", peer | numbers] when length(numbers) == 5 ->
    NodelabBench.driver(peer, Enum.map(numbers, &String.to_integer/1))

  argv ->
    IO.puts(:stderr, "usage: bench.exs peer LIFETIME_MS | driver PEER ROUNDS N_RTT N_MSGS N_SPAWN N_TASK; got #{inspect(argv)}")
    System.halt(2)
end
