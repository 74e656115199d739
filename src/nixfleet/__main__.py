from nixfleet.cli.main import main

main()
