from nixfleet.cli.launch import main

main()
